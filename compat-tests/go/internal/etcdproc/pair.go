package etcdproc

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// MustRefBin returns RefBin's binary or fails t with RefBin's error (which
// says how to get one).
func MustRefBin(t testing.TB) string {
	t.Helper()
	bin, err := RefBin()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// StartPair starts a fresh reference etcd (RefBin) and a fresh server under
// test (BinFromEnv) concurrently, as members named name, each with a new data
// directory, new ports and extraArgs appended to its flags; both are killed
// when t ends. A server's log is printed under a failed test only when that
// server failed to start or died during the test: a differential test's diff
// says what went wrong.
func StartPair(t *testing.T, name string, timeout time.Duration, extraArgs ...string) (ref, sut *Proc) {
	t.Helper()
	sutBin := BinFromEnv(t)
	refBin := MustRefBin(t)
	type member struct {
		label string
		quiet *quietTB
		proc  *Proc
	}
	members := []*member{{label: "etcd"}, {label: "rsetcd"}}
	var wg sync.WaitGroup
	errs := make([]error, len(members))
	for i, bin := range []string{refBin, sutBin} {
		m := members[i]
		m.quiet = &quietTB{TB: t}
		m.proc = New(m.quiet, bin, name)
		m.proc.ExtraArgs = append([]string(nil), extraArgs...)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.proc.Start(timeout); err != nil {
				m.quiet.loud.Store(true)
				errs[i] = fmt.Errorf("starting %s (%s): %w", m.label, m.proc.Bin, err)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, m := range members {
			if !m.proc.Running() {
				m.quiet.loud.Store(true) // it died during the test
			}
		}
	})
	return members[0].proc, members[1].proc
}

// quietTB is the testing.TB StartPair gives New: it hides a failed test
// from New's cleanup, which would otherwise print 60 lines of each server's
// log under every diff, unless the server failed to start or died.
type quietTB struct {
	testing.TB
	loud atomic.Bool
}

func (q *quietTB) Failed() bool { return q.loud.Load() && q.TB.Failed() }
