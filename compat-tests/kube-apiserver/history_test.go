package kubeapiserver

// The storage side of the checks: every change kube-apiserver made under a
// key prefix, read back from the cluster's own history (kube-apiserver's
// compaction is off for the test), and the members' copies of the data
// compared with each other.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// change is one change of one object, as the storage recorded it and as a
// watch reports it: ADDED, MODIFIED or DELETED, at revision RV.
type change struct {
	Type string
	Name string
	RV   int64
}

func (c change) String() string { return fmt.Sprintf("%s %s rv=%d", c.Type, c.Name, c.RV) }

// storageHistory returns every change under prefix up to the current
// revision, in revision order, read with a watch from revision 1: a put
// creating the key (version 1) is ADDED, a later put MODIFIED, a delete
// DELETED at the delete's revision. keep filters on the object name (the key
// after prefix); nil keeps everything. It waits for a progress notification
// at or past the current revision, so that the history is complete.
func storageHistory(ctx context.Context, cli *clientv3.Client, prefix string, keep func(string) bool) ([]change, error) {
	cur, err := cli.Get(ctx, "kube-apiserver-compat-revision-probe")
	if err != nil {
		return nil, err
	}
	want := cur.Header.Revision
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithProgressNotify())
	var out []change
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("history of %s: no progress notification at revision >= %d: %w", prefix, want, ctx.Err())
		case <-ticker.C:
			_ = cli.RequestProgress(wctx)
		case resp, ok := <-wch:
			if !ok {
				return nil, fmt.Errorf("history of %s: watch closed", prefix)
			}
			if err := resp.Err(); err != nil {
				return nil, fmt.Errorf("history of %s: %w", prefix, err)
			}
			for _, ev := range resp.Events {
				if ev.Kv.ModRevision > want {
					continue
				}
				name := strings.TrimPrefix(string(ev.Kv.Key), prefix)
				if keep != nil && !keep(name) {
					continue
				}
				c := change{Name: name, RV: ev.Kv.ModRevision}
				switch {
				case ev.Type == mvccpb.Event_DELETE:
					c.Type = "DELETED"
				case ev.Kv.Version == 1:
					c.Type = "ADDED"
				default:
					c.Type = "MODIFIED"
				}
				out = append(out, c)
			}
			if resp.IsProgressNotify() && resp.Header.Revision >= want {
				return out, nil
			}
			if len(resp.Events) > 0 && resp.Header.Revision >= want && resp.Events[len(resp.Events)-1].Kv.ModRevision >= want {
				return out, nil
			}
		}
	}
}

// watchedChanges turns kubectl watch events into changes, keeping the names
// keep accepts (nil: all).
func watchedChanges(events []watchEvent, keep func(string) bool) []change {
	var out []change
	for _, e := range events {
		if keep != nil && !keep(e.Object.Metadata.Name) {
			continue
		}
		rv, _ := strconv.ParseInt(e.Object.Metadata.ResourceVersion, 10, 64)
		out = append(out, change{Type: e.Type, Name: e.Object.Metadata.Name, RV: rv})
	}
	return out
}

// diffChanges describes where two change lists differ (empty when equal).
func diffChanges(watched, stored []change) string {
	var b strings.Builder
	n := max(len(watched), len(stored))
	first := -1
	for i := 0; i < n; i++ {
		var w, s string
		if i < len(watched) {
			w = watched[i].String()
		}
		if i < len(stored) {
			s = stored[i].String()
		}
		if w != s && first < 0 {
			first = i
		}
	}
	if first < 0 {
		return ""
	}
	fmt.Fprintf(&b, "%d changes watched, %d in storage; first difference at #%d\n", len(watched), len(stored), first)
	fmt.Fprintf(&b, "%-40s | %s\n", "kubectl get --watch", "storage history")
	for i := max(0, first-3); i < min(n, first+15); i++ {
		var w, s string
		if i < len(watched) {
			w = watched[i].String()
		}
		if i < len(stored) {
			s = stored[i].String()
		}
		mark := " "
		if w != s {
			mark = "!"
		}
		fmt.Fprintf(&b, "%s%-39s | %s\n", mark, w, s)
	}
	return b.String()
}

// memberDigest is one member's view of the keyspace at one revision.
type memberDigest struct {
	keys   int
	digest string // sha256 over key, create/mod revision, version, value
	hashKV uint32
}

// digestAt reads every key at revision rev from one member with a
// serializable Get (its own copy, no leader involved), plus HashKV at rev.
// A member that has not applied rev yet answers ErrFutureRev: retried until
// ctx ends.
func digestAt(ctx context.Context, endpoint string, rev int64) (memberDigest, error) {
	cli, err := newClient(endpoint)
	if err != nil {
		return memberDigest{}, err
	}
	defer cli.Close()
	var lastErr error
	for {
		d, err := digestOnce(ctx, cli, endpoint, rev)
		if err == nil {
			return d, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return memberDigest{}, fmt.Errorf("%s at revision %d: %v", endpoint, rev, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func digestOnce(ctx context.Context, cli *clientv3.Client, endpoint string, rev int64) (memberDigest, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(cctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev), clientv3.WithSerializable())
	if err != nil {
		return memberDigest{}, fmt.Errorf("serializable Get: %w", err)
	}
	h := sha256.New()
	for _, kv := range resp.Kvs {
		fmt.Fprintf(h, "%q %d %d %d %d\n", kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
		h.Write(kv.Value)
		h.Write([]byte{0})
	}
	hk, err := cli.HashKV(cctx, endpoint, rev)
	if err != nil {
		return memberDigest{}, fmt.Errorf("HashKV: %w", err)
	}
	return memberDigest{keys: len(resp.Kvs), digest: fmt.Sprintf("%x", h.Sum(nil))[:16], hashKV: hk.Hash}, nil
}

// countKeys counts the keys under prefix (linearizable).
func countKeys(ctx context.Context, cli *clientv3.Client, prefix string) (int64, error) {
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// withPrefixSerializableAt are the options of a serializable prefix Get at
// revision rev: a member's own copy.
func withPrefixSerializableAt(rev int64) []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithRev(rev)}
}
