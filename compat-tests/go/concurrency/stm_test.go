package concurrency

import (
	"fmt"
	"math/rand"
	"strconv"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// TestSTMTransfers: 10 goroutines, each with its own client, make 50
// transfers each between 5 accounts with concurrency.NewSTM, under each
// isolation level that is meant to be safe for read-modify-write
// (SerializableSnapshot, Serializable, RepeatableReads). Every transfer also
// writes a log record in the same transaction. Afterwards the total is
// conserved, every balance equals its initial value plus the net of the
// transfers the goroutines saw committed (none lost, none applied twice),
// and the log holds exactly the 500 committed transfers.
func TestSTMTransfers(t *testing.T) {
	forEachServer(t, func(t *testing.T, srv *server) {
		for _, iso := range []struct {
			name string
			lvl  concurrency.Isolation
		}{
			{"SerializableSnapshot", concurrency.SerializableSnapshot},
			{"Serializable", concurrency.Serializable},
			{"RepeatableReads", concurrency.RepeatableReads},
		} {
			t.Run(iso.name, func(t *testing.T) {
				stmTransfers(t, srv, "/stm/"+iso.name+"/", iso.lvl)
			})
		}
	})
}

func stmTransfers(t *testing.T, srv *server, pfx string, iso concurrency.Isolation) {
	const (
		accounts  = 5
		initial   = 1000
		workers   = 10
		transfers = 50
	)
	acct := func(i int) string { return fmt.Sprintf("%saccount/%d", pfx, i) }
	logKey := func(w, i int) string { return fmt.Sprintf("%slog/%02d/%03d", pfx, w, i) }

	ctx, cancel := ctxTimeout(opTimeout)
	defer cancel()
	cli := srv.client(t)
	for i := range accounts {
		if _, err := cli.Put(ctx, acct(i), strconv.Itoa(initial)); err != nil {
			t.Fatal(err)
		}
	}

	type transfer struct{ from, to, amount int }
	type result struct {
		w    int
		done []transfer // in order: done[i] is transfer i
		err  error
	}
	results := make(chan result, workers)
	for w := range workers {
		wcli := srv.client(t)
		go func() {
			rng := rand.New(rand.NewSource(int64(w)))
			r := result{w: w}
			defer func() { results <- r }()
			for i := range transfers {
				from := rng.Intn(accounts)
				to := (from + 1 + rng.Intn(accounts-1)) % accounts
				want := 1 + rng.Intn(100)
				var committed transfer // of the last (committing) run of apply
				tctx, tcancel := ctxTimeout(opTimeout)
				_, err := concurrency.NewSTM(wcli, func(s concurrency.STM) error {
					fb, err := strconv.Atoi(s.Get(acct(from)))
					if err != nil {
						return fmt.Errorf("balance of %s: %w", acct(from), err)
					}
					tb, err := strconv.Atoi(s.Get(acct(to)))
					if err != nil {
						return fmt.Errorf("balance of %s: %w", acct(to), err)
					}
					amount := min(want, fb)
					s.Put(acct(from), strconv.Itoa(fb-amount))
					s.Put(acct(to), strconv.Itoa(tb+amount))
					s.Put(logKey(w, i), fmt.Sprintf("%d %d %d", from, to, amount))
					committed = transfer{from, to, amount}
					return nil
				}, concurrency.WithIsolation(iso), concurrency.WithAbortContext(tctx))
				tcancel()
				if err != nil {
					r.err = fmt.Errorf("worker %d transfer %d: %w", w, i, err)
					return
				}
				r.done = append(r.done, committed)
			}
		}()
	}
	net := make([]int, accounts)
	wantLog := map[string]string{} // log key -> value of the committed transfer
	for range workers {
		r := <-results
		if r.err != nil {
			t.Error(r.err)
		}
		for i, tr := range r.done {
			net[tr.from] -= tr.amount
			net[tr.to] += tr.amount
			wantLog[logKey(r.w, i)] = fmt.Sprintf("%d %d %d", tr.from, tr.to, tr.amount)
		}
	}
	if t.Failed() {
		return
	}

	resp, err := cli.Get(ctx, pfx+"account/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != accounts {
		t.Fatalf("%d accounts, want %d: %v", len(resp.Kvs), accounts, resp.Kvs)
	}
	total := 0
	for i, kv := range resp.Kvs {
		b, err := strconv.Atoi(string(kv.Value))
		if err != nil {
			t.Fatalf("%s: %q: %v", kv.Key, kv.Value, err)
		}
		total += b
		if b != initial+net[i] {
			t.Errorf("%s: balance %d, want %d (initial %d, net of committed transfers %+d)", kv.Key, b, initial+net[i], initial, net[i])
		}
	}
	if total != accounts*initial {
		t.Errorf("total %d, want %d: money was created or destroyed", total, accounts*initial)
	}

	resp, err = cli.Get(ctx, pfx+"log/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != workers*transfers {
		t.Errorf("%d log records, want %d", len(resp.Kvs), workers*transfers)
	}
	logNet := make([]int, accounts)
	for _, kv := range resp.Kvs {
		var from, to, amount int
		if _, err := fmt.Sscanf(string(kv.Value), "%d %d %d", &from, &to, &amount); err != nil {
			t.Fatalf("%s: %q: %v", kv.Key, kv.Value, err)
		}
		logNet[from] -= amount
		logNet[to] += amount
		if want := wantLog[string(kv.Key)]; string(kv.Value) != want {
			t.Errorf("log record %s = %q, but the worker saw %q committed", kv.Key, kv.Value, want)
		}
	}
	if fmt.Sprint(logNet) != fmt.Sprint(net) {
		t.Errorf("net per account from the log %v, from the workers %v", logNet, net)
	}
}
