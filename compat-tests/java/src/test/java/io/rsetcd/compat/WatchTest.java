package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.Client;
import io.etcd.jetcd.KV;
import io.etcd.jetcd.Watch;
import io.etcd.jetcd.common.exception.CompactedException;
import io.etcd.jetcd.common.exception.ErrorCode;
import io.etcd.jetcd.options.DeleteOption;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.WatchOption;
import io.etcd.jetcd.watch.WatchEvent;
import io.etcd.jetcd.watch.WatchEvent.EventType;
import io.etcd.jetcd.watch.WatchResponse;
import io.grpc.Status;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Watch: prefix watches, event order and revisions, replay from a past revision, cancel. */
class WatchTest extends CompatTest {
    private static final String P = "/java/watch/";

    /** Starts a watch and waits for the server's "created" answer, so later writes are seen. */
    private static WatchCollector watch(Watch w, String key, WatchOption.Builder opt, List<Watch.Watcher> out) {
        WatchCollector c = new WatchCollector();
        out.add(w.watch(bs(key), opt.withCreateNotify(true).build(), c));
        WatchResponse created = c.nextResponse();
        assertTrue(created.isCreatedNotify(), "first response is the creation: " + created);
        return c;
    }

    private static void assertEvent(WatchEvent e, EventType type, String key, String value, long modRev) {
        assertEquals(type, e.getEventType(), "event type");
        assertEquals(key, str(e.getKeyValue().getKey()), "event key");
        assertEquals(value, str(e.getKeyValue().getValue()), "event value");
        assertEquals(modRev, e.getKeyValue().getModRevision(), "event mod revision");
    }

    @BothServers
    void prefixWatchSeesPutsAndDeletesInOrder(ServerKind kind) {
        Client client = client(kind);
        KV kv = client.getKVClient();
        String p = P + "prefix/";
        List<Watch.Watcher> watchers = new java.util.ArrayList<>();
        WatchCollector c = watch(client.getWatchClient(), p,
            WatchOption.builder().isPrefix(true).withPrevKV(true), watchers);

        long r1 = await(kv.put(bs(p + "a"), bs("1"))).getHeader().getRevision();
        long r2 = await(kv.put(bs(p + "b"), bs("2"))).getHeader().getRevision();
        await(kv.put(bs(P + "prefix-outside"), bs("x"))); // not under the prefix
        long r3 = await(kv.put(bs(p + "a"), bs("3"))).getHeader().getRevision();
        long r4 = await(kv.delete(bs(p), DeleteOption.builder().isPrefix(true).build())).getHeader().getRevision();

        List<WatchEvent> ev = c.nextEvents(5);
        assertEvent(ev.get(0), EventType.PUT, p + "a", "1", r1);
        assertEquals(r1, ev.get(0).getKeyValue().getCreateRevision());
        assertEquals(1, ev.get(0).getKeyValue().getVersion());
        assertEvent(ev.get(1), EventType.PUT, p + "b", "2", r2);
        assertEvent(ev.get(2), EventType.PUT, p + "a", "3", r3);
        assertEquals(2, ev.get(2).getKeyValue().getVersion());
        assertEquals("1", str(ev.get(2).getPrevKV().getValue()), "prev_kv of the second put");
        // one delete revision for both keys, in key order
        assertEvent(ev.get(3), EventType.DELETE, p + "a", "", r4);
        assertEvent(ev.get(4), EventType.DELETE, p + "b", "", r4);
        assertEquals("3", str(ev.get(3).getPrevKV().getValue()), "prev_kv of a delete");
        assertEquals("2", str(ev.get(4).getPrevKV().getValue()));
        assertEquals(r3 + 1, r4);
        watchers.forEach(Watch.Watcher::close);
    }

    @BothServers
    void watchFromPastRevisionReplaysHistory(ServerKind kind) {
        Client client = client(kind);
        KV kv = client.getKVClient();
        String k = P + "replay";
        long r1 = await(kv.put(bs(k), bs("v1"))).getHeader().getRevision();
        long r2 = await(kv.put(bs(k), bs("v2"))).getHeader().getRevision();
        long r3 = await(kv.delete(bs(k))).getHeader().getRevision();
        long r4 = await(kv.put(bs(k), bs("v4"))).getHeader().getRevision();

        List<Watch.Watcher> watchers = new java.util.ArrayList<>();
        WatchCollector c = watch(client.getWatchClient(), k, WatchOption.builder().withRevision(r2), watchers);
        List<WatchEvent> ev = c.nextEvents(3);
        assertEvent(ev.get(0), EventType.PUT, k, "v2", r2);
        assertEquals(r1, ev.get(0).getKeyValue().getCreateRevision());
        assertEvent(ev.get(1), EventType.DELETE, k, "", r3);
        assertEvent(ev.get(2), EventType.PUT, k, "v4", r4);
        assertEquals(r4, ev.get(2).getKeyValue().getCreateRevision(), "created again after the delete");

        // then live events on the same watch
        long r5 = await(kv.put(bs(k), bs("v5"))).getHeader().getRevision();
        assertEvent(c.nextEvent(), EventType.PUT, k, "v5", r5);
        watchers.forEach(Watch.Watcher::close);
    }

    @BothServers
    void closedWatcherGetsNoMoreEventsOtherWatcherDoes(ServerKind kind) throws InterruptedException {
        Client client = client(kind);
        KV kv = client.getKVClient();
        String k = P + "cancel";
        List<Watch.Watcher> watchers = new java.util.ArrayList<>();
        WatchCollector closed = watch(client.getWatchClient(), k, WatchOption.builder(), watchers);
        WatchCollector open = watch(client.getWatchClient(), k, WatchOption.builder(), watchers);

        long r1 = await(kv.put(bs(k), bs("before"))).getHeader().getRevision();
        assertEvent(closed.nextEvent(), EventType.PUT, k, "before", r1);
        assertEvent(open.nextEvent(), EventType.PUT, k, "before", r1);

        watchers.get(0).close();
        assertTrue(closed.isCompleted());
        long r2 = await(kv.put(bs(k), bs("after"))).getHeader().getRevision();
        assertEvent(open.nextEvent(), EventType.PUT, k, "after", r2);
        assertEquals(List.of(), closed.eventsWithin(300), "no events after close");
        assertEquals(List.of(), closed.errors());
        watchers.get(1).close();
    }

    @BothServers
    void watchFromFutureRevisionWaitsForIt(ServerKind kind) {
        Client client = client(kind);
        KV kv = client.getKVClient();
        String k = P + "future";
        long now = await(kv.put(bs(k), bs("now"))).getHeader().getRevision();
        List<Watch.Watcher> watchers = new java.util.ArrayList<>();
        WatchCollector c = watch(client.getWatchClient(), k, WatchOption.builder().withRevision(now + 2), watchers);
        await(kv.put(bs(k), bs("skipped")));          // now + 1: before the start revision
        long r = await(kv.put(bs(k), bs("seen"))).getHeader().getRevision();
        assertEquals(now + 2, r);
        assertEvent(c.nextEvent(), EventType.PUT, k, "seen", r);
        watchers.forEach(Watch.Watcher::close);
    }

    @BothServers
    void noPutFilterAndWatchErrorsAreNone(ServerKind kind) throws InterruptedException {
        Client client = client(kind);
        KV kv = client.getKVClient();
        String k = P + "noput";
        List<Watch.Watcher> watchers = new java.util.ArrayList<>();
        WatchCollector c = watch(client.getWatchClient(), k, WatchOption.builder().withNoPut(true), watchers);
        await(kv.put(bs(k), bs("x")));
        long r = await(kv.delete(bs(k))).getHeader().getRevision();
        WatchEvent e = c.nextEvent();
        assertEvent(e, EventType.DELETE, k, "", r);
        assertTrue(e.getPrevKV() == null || e.getPrevKV().getKey().isEmpty(), "no prev_kv unless asked");
        assertEquals(List.of(), c.eventsWithin(200));
        assertEquals(List.of(), c.errors());
        watchers.forEach(Watch.Watcher::close);
    }

    @BothServers
    void watchFromCompactedRevisionFails(ServerKind kind) {
        Client client = client(kind);
        KV kv = client.getKVClient();
        String k = P + "compacted";
        long r1 = await(kv.put(bs(k), bs("old"))).getHeader().getRevision();
        long r2 = await(kv.put(bs(k), bs("new"))).getHeader().getRevision();
        // compacting the shared server at its current revision: no other test reads
        // revisions older than the ones it wrote itself
        await(kv.compact(r2));

        WatchCollector c = new WatchCollector();
        Watch.Watcher w = client.getWatchClient().watch(bs(k), WatchOption.builder().withRevision(r1).build(), c);
        try {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_SECONDS);
            while (c.errors().isEmpty() && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            w.close();
        }
        assertEquals(1, c.errors().size(), "one error: " + c.errors());
        CompactedException e = assertInstanceOf(CompactedException.class, c.errors().get(0));
        assertEquals(r2, e.getCompactedRevision());
        assertEquals(ErrorCode.OUT_OF_RANGE, e.getErrorCode());

        assertRpcError(kv.get(bs(k), GetOption.builder().withRevision(r1).build()),
            Status.Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted");
    }
}
