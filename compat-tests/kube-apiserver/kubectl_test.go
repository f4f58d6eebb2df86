package kubeapiserver

// kubectl: one-shot commands, and `kubectl get --watch` running in the
// background whose events are collected.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// kubeBins returns the directory holding kube-apiserver and kubectl:
// $KUBE_BIN_DIR, or what ./build.sh prints (it builds them into
// <repo>/.cache/kube/bin unless an up-to-date build is there).
func kubeBins(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("KUBE_BIN_DIR")
	if dir == "" {
		start := time.Now()
		cmd := exec.Command("./build.sh")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("./build.sh: %v\n%s", err, stderr.String())
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		dir = lines[len(lines)-1]
		if d := time.Since(start); d > 5*time.Second {
			t.Logf("built kube-apiserver and kubectl into %s in %v", dir, d.Round(time.Second))
		}
	}
	for _, b := range []string{"kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			t.Fatalf("%v (run ./build.sh, or set KUBE_BIN_DIR)", err)
		}
	}
	return dir
}

// kubectl runs the kubectl binary with a kubeconfig.
type kubectl struct {
	t          *testing.T
	bin        string
	kubeconfig string
	// logMu guards log, the transcript of every command (kubectl.log).
	logMu *sync.Mutex
	log   *os.File
}

// with returns a kubectl whose must* fail t (a subtest) instead.
func (k *kubectl) with(t *testing.T) *kubectl {
	return &kubectl{t: t, bin: k.bin, kubeconfig: k.kubeconfig, logMu: k.logMu, log: k.log}
}

// run runs kubectl with args (and stdin when not empty), bounded to 60 s.
func (k *kubectl) run(stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	full := append([]string{"--kubeconfig", k.kubeconfig}, args...)
	cmd := exec.CommandContext(ctx, k.bin, full...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	k.logMu.Lock()
	status := "ok"
	if err != nil {
		status = fmt.Sprintf("error %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	fmt.Fprintf(k.log, "%s kubectl %s (%v) -> %s\n", start.Format("15:04:05.000"), strings.Join(args, " "), time.Since(start).Round(time.Millisecond), status)
	k.logMu.Unlock()
	if err != nil {
		return stdout.String(), stderr.String(), fmt.Errorf("kubectl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), stderr.String(), nil
}

// must runs kubectl and fails the test on error; it returns stdout.
func (k *kubectl) must(args ...string) string {
	k.t.Helper()
	out, _, err := k.run("", args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

// mustIn is must with stdin.
func (k *kubectl) mustIn(stdin string, args ...string) string {
	k.t.Helper()
	out, _, err := k.run(stdin, args...)
	if err != nil {
		k.t.Fatal(err)
	}
	return out
}

// obj is the part of a Kubernetes object the test looks at; Raw keeps the
// whole object.
type obj struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name              string            `json:"name"`
		Namespace         string            `json:"namespace"`
		ResourceVersion   string            `json:"resourceVersion"`
		UID               string            `json:"uid"`
		Labels            map[string]string `json:"labels"`
		Annotations       map[string]string `json:"annotations"`
		DeletionTimestamp *string           `json:"deletionTimestamp"`
		GenerateName      string            `json:"generateName"`
	} `json:"metadata"`
	Data  map[string]string `json:"data"`
	Items []json.RawMessage `json:"items"`
	Raw   json.RawMessage   `json:"-"`
}

func (o obj) rv() int64 {
	n, _ := strconv.ParseInt(o.Metadata.ResourceVersion, 10, 64)
	return n
}

func parseObj(t *testing.T, s string) obj {
	t.Helper()
	var o obj
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		t.Fatalf("parsing kubectl output as an object: %v\n%s", err, s)
	}
	o.Raw = json.RawMessage(s)
	return o
}

// mustObj runs kubectl (with "-o json" expected among args) and parses the
// object it prints.
func (k *kubectl) mustObj(stdin string, args ...string) obj {
	k.t.Helper()
	return parseObj(k.t, k.mustIn(stdin, args...))
}

// items parses the items of a List.
func (o obj) items(t *testing.T) []obj {
	t.Helper()
	var out []obj
	for _, raw := range o.Items {
		out = append(out, parseObj(t, string(raw)))
	}
	return out
}

// watchEvent is one event printed by `kubectl get --watch
// --output-watch-events -o json`.
type watchEvent struct {
	Type   string
	Object obj
	At     time.Time
}

func (e watchEvent) String() string {
	return fmt.Sprintf("%s %s rv=%s", e.Type, e.Object.Metadata.Name, e.Object.Metadata.ResourceVersion)
}

// watcher is a `kubectl get <resource> --watch` running in the background.
type watcher struct {
	resource string
	cmd      *exec.Cmd
	stderr   bytes.Buffer
	exited   chan struct{}
	waitErr  error

	mu       sync.Mutex
	events   []watchEvent
	parseErr error
}

// watch starts `kubectl get <resource> [-n ns] --watch --output-watch-events
// -o json`: it lists first (printing the objects as ADDED) and then prints
// every event from the list's resourceVersion on.
func (k *kubectl) watch(resource, namespace string) *watcher {
	k.t.Helper()
	args := []string{"--kubeconfig", k.kubeconfig, "get", resource, "--watch", "--output-watch-events", "-o", "json"}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	w := &watcher{resource: resource, exited: make(chan struct{})}
	w.cmd = exec.Command(k.bin, args...)
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	w.cmd.Stderr = &w.stderr
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		k.t.Fatal(err)
	}
	if err := w.cmd.Start(); err != nil {
		k.t.Fatal(err)
	}
	parsed := make(chan struct{})
	go func() {
		defer close(parsed)
		dec := json.NewDecoder(stdout)
		for {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				if err != io.EOF {
					w.mu.Lock()
					w.parseErr = err
					w.mu.Unlock()
				}
				_, _ = io.Copy(io.Discard, stdout)
				return
			}
			var ev struct {
				Type   string          `json:"type"`
				Object json.RawMessage `json:"object"`
			}
			if err := json.Unmarshal(raw, &ev); err != nil || ev.Type == "" {
				w.mu.Lock()
				w.parseErr = fmt.Errorf("not a watch event: %v: %s", err, raw)
				w.mu.Unlock()
				continue
			}
			var o obj
			if err := json.Unmarshal(ev.Object, &o); err != nil {
				w.mu.Lock()
				w.parseErr = fmt.Errorf("event object: %v: %s", err, ev.Object)
				w.mu.Unlock()
				continue
			}
			o.Raw = ev.Object
			w.mu.Lock()
			w.events = append(w.events, watchEvent{Type: ev.Type, Object: o, At: time.Now()})
			w.mu.Unlock()
		}
	}()
	go func() {
		<-parsed
		w.waitErr = w.cmd.Wait()
		close(w.exited)
	}()
	k.t.Cleanup(w.stop)
	return w
}

func (w *watcher) snapshot() []watchEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]watchEvent(nil), w.events...)
}

func (w *watcher) running() bool {
	select {
	case <-w.exited:
		return false
	default:
		return true
	}
}

// waitFor waits up to timeout for an event satisfying ok.
func (w *watcher) waitFor(timeout time.Duration, ok func(watchEvent) bool) (watchEvent, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, e := range w.snapshot() {
			if ok(e) {
				return e, true
			}
		}
		if time.Now().After(deadline) || !w.running() {
			return watchEvent{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *watcher) stop() {
	if w.running() {
		_ = w.cmd.Process.Signal(syscall.SIGKILL)
		<-w.exited
	}
}

// status describes how the watch ended, for failure messages.
func (w *watcher) status() string {
	w.mu.Lock()
	perr := w.parseErr
	w.mu.Unlock()
	s := "running"
	if !w.running() {
		s = fmt.Sprintf("exited (%v)", w.waitErr)
	}
	if perr != nil {
		s += fmt.Sprintf(", output error: %v", perr)
	}
	if e := strings.TrimSpace(w.stderr.String()); e != "" && !w.running() {
		s += ", stderr: " + e
	}
	return s
}
