// Package watch checks rsetcd's Watch service with etcd's Go client
// (go.etcd.io/etcd/client/v3, v3.6.16) and, where the client hides the wire
// (fragments, progress replies, a stream nobody reads), with the raw
// etcdserverpb.Watch stream:
//
//   - TestWatchOrderUnderLoad: 8 writers do 2000 puts/deletes/txns while 23
//     watchers on 5 streams (3 clients) watch overlapping prefixes, ranges,
//     single keys and from-key ranges, some with prev_kv: 15 created before
//     the writes, 5 created at 30 % with a start revision in the past
//     (catching up under load), 3 created at 50 % without one (racing with
//     the writes). Every watcher must receive exactly the (revision, key,
//     type, value, prev value) list the acknowledged writes produced in its
//     range (the mid-load ones: a gap-free suffix holding every change after
//     their created revision), in order, each revision in one response; the
//     writes' ledger is checked against a final Get.
//   - TestWatchResumeAfterReconnect: a watcher reads some events, its client
//     is closed while a writer goes on; a new client watches from the last
//     received revision + 1: no gap, no duplicate.
//   - TestWatchCompacted: watches below, at and above the compacted revision
//     (compact_revision + canceled, ErrCompacted, channel closed), compared
//     with the reference etcd.
//   - TestWatchSlowConsumer: a raw watch stream that is not read while
//     20,000 puts of 1 KiB happen; the writers must not be blocked, the
//     server's RSS must stay bounded, and reading afterwards yields every
//     event in order.
//   - TestWatchSlowConsumerCompacted: the same stall (5,000 puts), then a
//     compaction at the current revision: the watcher gets a gap-free prefix
//     of the events and then a compacted cancel, or everything.
//   - TestWatchRawCreateCancel: raw creates (auto and client-chosen ids,
//     duplicates, empty ranges, negative start, empty key, from-key),
//     cancels (known, unknown), empty requests, progress; watch ids never
//     reused; compared with the reference etcd.
//   - TestWatchCancelThenNewWatcher: cancel a busy clientv3 watcher and
//     create another on the same stream, 100 times: the new one never gets
//     the old one's events.
//   - TestWatchRequestProgress: RequestProgress on synced watchers gives a
//     progress notify at the current revision (clientv3 and raw stream:
//     watch_id -1).
//   - TestWatchOptionsTranscript: WithPrevKV, WithFilterPut/WithFilterDelete (NOPUT/NODELETE),
//     WithCreatedNotify, ranges; responses compared with the reference etcd.
//   - TestWatchFragment: a txn of three ~1 MiB values watched with prev_kv
//     (server started with --max-request-bytes=3 MiB): number and contents
//     of the fragments on the raw stream, reassembly by clientv3, compared
//     with the reference etcd.
//   - TestWatchProgressNotifyInterval: WithProgressNotify on a server started
//     with --experimental-watch-progress-notify-interval=200ms.
//
// rsetcd comes from $RSETCD_BIN (the tests skip when it is unset), the
// reference etcd from $REF_ETCD_BIN (default <repo>/.cache/reference/bin/etcd).
// Differential tests run the same calls on a fresh rsetcd and a fresh
// reference etcd in parallel; the reference run also checks the test itself.
package watch
