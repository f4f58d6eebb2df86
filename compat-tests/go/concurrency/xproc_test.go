package concurrency

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Environment of the child processes of TestMutexAcrossProcesses.
const (
	helperEndpointEnv = "CONCURRENCY_HELPER_ENDPOINT" // set only in children
	helperIDEnv       = "CONCURRENCY_HELPER_ID"
	helperRoundsEnv   = "CONCURRENCY_HELPER_ROUNDS"
)

const (
	xprocChildren = 3
	xprocRounds   = 20
	xprocLock     = "/xproc/lock"
	xprocCounter  = "/xproc/counter"
	xprocRecords  = "/xproc/rec/" // <child>/<round>/enter and .../exit
)

// TestMutexAcrossProcesses re-executes this test binary as 3 child
// processes (TestHelperProcess), each with its own client and Session,
// taking the mutex 20 times and incrementing a counter key inside. Inside
// each critical section a child writes an "enter" record (value: the
// Mutex's Header().Revision at acquisition) and, after the counter write, an
// "exit" record (value: the counter value it read and the revision of its
// counter write). The parent checks the counter is 60 and that the critical
// sections, ordered by revision, are disjoint: each one's acquisition
// revision comes after the previous one's exit record, and the counter
// values read are 0..59 in that order.
func TestMutexAcrossProcesses(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		type child struct {
			cmd *exec.Cmd
			out bytes.Buffer
		}
		children := make([]*child, xprocChildren)
		for i := range children {
			c := &child{}
			c.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1", "-test.timeout=90s", "-test.v")
			c.cmd.Env = append(os.Environ(),
				helperEndpointEnv+"="+srv.proc.ClientURL,
				helperIDEnv+"="+strconv.Itoa(i),
				helperRoundsEnv+"="+strconv.Itoa(xprocRounds),
			)
			c.cmd.Stdout = &c.out
			c.cmd.Stderr = &c.out
			children[i] = c
		}
		for i, c := range children {
			if err := c.cmd.Start(); err != nil {
				t.Fatalf("starting child %d: %v", i, err)
			}
		}
		for i, c := range children {
			if err := c.cmd.Wait(); err != nil {
				t.Errorf("child %d: %v; output:\n%s", i, err, c.out.String())
			}
		}
		if t.Failed() {
			return
		}

		ctx, cancel := ctxTimeout(opTimeout)
		defer cancel()
		cli := srv.client(t)
		resp, err := cli.Get(ctx, xprocCounter)
		if err != nil {
			t.Fatal(err)
		}
		want := strconv.Itoa(xprocChildren * xprocRounds)
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
			t.Errorf("counter: got %v, want %s", resp.Kvs, want)
		}
		resp, err = cli.Get(ctx, xprocRecords, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		type section struct {
			name       string // child/round
			lockRev    int64  // Mutex.Header().Revision
			enterRev   int64  // mod revision of the enter record
			read       int    // counter value read inside
			counterRev int64  // revision of the counter write
			exitRev    int64  // mod revision of the exit record
		}
		byName := map[string]*section{}
		get := func(name string) *section {
			if s, ok := byName[name]; ok {
				return s
			}
			s := &section{name: name, read: -1}
			byName[name] = s
			return s
		}
		for _, kv := range resp.Kvs {
			parts := strings.Split(strings.TrimPrefix(string(kv.Key), xprocRecords), "/")
			if len(parts) != 3 {
				t.Errorf("unexpected record key %q", kv.Key)
				continue
			}
			s := get(parts[0] + "/" + parts[1])
			switch parts[2] {
			case "enter":
				s.enterRev = kv.ModRevision
				s.lockRev, _ = strconv.ParseInt(string(kv.Value), 10, 64)
			case "exit":
				s.exitRev = kv.ModRevision
				if _, err := fmt.Sscanf(string(kv.Value), "%d %d", &s.read, &s.counterRev); err != nil {
					t.Errorf("record %s: value %q: %v", kv.Key, kv.Value, err)
				}
			default:
				t.Errorf("unexpected record key %q", kv.Key)
			}
		}
		var sections []*section
		for _, s := range byName {
			if s.enterRev == 0 || s.exitRev == 0 {
				t.Errorf("critical section %s: enter or exit record missing (%+v)", s.name, *s)
				continue
			}
			sections = append(sections, s)
		}
		if len(sections) != xprocChildren*xprocRounds {
			t.Errorf("found %d complete critical sections, want %d", len(sections), xprocChildren*xprocRounds)
		}
		sort.Slice(sections, func(i, j int) bool { return sections[i].enterRev < sections[j].enterRev })
		for i, s := range sections {
			if !(s.lockRev < s.enterRev && s.enterRev < s.counterRev && s.counterRev < s.exitRev) {
				t.Errorf("critical section %s: revisions out of order: lock %d, enter %d, counter write %d, exit %d",
					s.name, s.lockRev, s.enterRev, s.counterRev, s.exitRev)
			}
			if s.read != i {
				t.Errorf("critical section %s (number %d in revision order) read counter %d, want %d", s.name, i, s.read, i)
			}
			if i > 0 {
				prev := sections[i-1]
				if s.lockRev <= prev.exitRev {
					t.Errorf("critical sections overlap: %s acquired the lock at revision %d, but %s (entered at %d) only wrote its exit record at revision %d",
						s.name, s.lockRev, prev.name, prev.enterRev, prev.exitRev)
				}
			}
		}
	})
}

// TestHelperProcess is the child of TestMutexAcrossProcesses; it does
// nothing unless started by it.
func TestHelperProcess(t *testing.T) {
	endpoint := os.Getenv(helperEndpointEnv)
	if endpoint == "" {
		return
	}
	id := os.Getenv(helperIDEnv)
	rounds, err := strconv.Atoi(os.Getenv(helperRoundsEnv))
	if err != nil {
		t.Fatalf("%s: %v", helperRoundsEnv, err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	m := concurrency.NewMutex(s, xprocLock)
	for i := range rounds {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		rec := fmt.Sprintf("%s%s/%03d/", xprocRecords, id, i)
		if err := m.Lock(ctx); err != nil {
			t.Fatalf("round %d: Lock: %v", i, err)
		}
		lockRev := m.Header().Revision
		if _, err := cli.Put(ctx, rec+"enter", strconv.FormatInt(lockRev, 10)); err != nil {
			t.Fatalf("round %d: Put enter record: %v", i, err)
		}
		resp, err := cli.Get(ctx, xprocCounter)
		if err != nil {
			t.Fatalf("round %d: Get counter: %v", i, err)
		}
		n := 0
		if len(resp.Kvs) == 1 {
			if n, err = strconv.Atoi(string(resp.Kvs[0].Value)); err != nil {
				t.Fatalf("round %d: counter value %q: %v", i, resp.Kvs[0].Value, err)
			}
		}
		presp, err := cli.Put(ctx, xprocCounter, strconv.Itoa(n+1))
		if err != nil {
			t.Fatalf("round %d: Put counter: %v", i, err)
		}
		if _, err := cli.Put(ctx, rec+"exit", fmt.Sprintf("%d %d", n, presp.Header.Revision)); err != nil {
			t.Fatalf("round %d: Put exit record: %v", i, err)
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatalf("round %d: Unlock: %v", i, err)
		}
		cancel()
	}
	if err := s.Close(); err != nil {
		t.Errorf("Session.Close: %v", err)
	}
}
