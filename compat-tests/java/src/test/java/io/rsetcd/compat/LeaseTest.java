package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.Client;
import io.etcd.jetcd.KV;
import io.etcd.jetcd.Lease;
import io.etcd.jetcd.Watch;
import io.etcd.jetcd.lease.LeaseGrantResponse;
import io.etcd.jetcd.lease.LeaseKeepAliveResponse;
import io.etcd.jetcd.lease.LeaseTimeToLiveResponse;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.LeaseOption;
import io.etcd.jetcd.options.PutOption;
import io.etcd.jetcd.options.WatchOption;
import io.etcd.jetcd.watch.WatchEvent;
import io.grpc.Status;
import java.util.List;
import java.util.stream.Collectors;

/** Lease: grant, keep-alive once, time-to-live with keys, revoke, expiry of a short lease. */
class LeaseTest extends CompatTest {
    private static final String P = "/java/lease/";

    @BothServers
    void grantAttachKeysTimeToLiveKeepAliveRevoke(ServerKind kind) {
        Client client = client(kind);
        Lease lease = client.getLeaseClient();
        KV kv = client.getKVClient();

        LeaseGrantResponse g = await(lease.grant(60));
        long id = g.getID();
        assertTrue(id > 0, "lease id " + id);
        assertEquals(60, g.getTTL());

        String p = P + "attached/";
        await(kv.put(bs(p + "b"), bs("1"), PutOption.builder().withLeaseId(id).build()));
        await(kv.put(bs(p + "a"), bs("2"), PutOption.builder().withLeaseId(id).build()));
        await(kv.put(bs(P + "attached-free"), bs("3")));
        assertEquals(id, await(kv.get(bs(p + "a"))).getKvs().get(0).getLease());

        LeaseTimeToLiveResponse ttl = await(lease.timeToLive(id, LeaseOption.builder().withAttachedKeys().build()));
        assertEquals(id, ttl.getID());
        assertEquals(60, ttl.getGrantedTTL());
        assertTrue(ttl.getTTL() > 50 && ttl.getTTL() <= 60, "remaining TTL " + ttl.getTTL());
        List<String> keys = ttl.getKeys().stream().map(Bytes::str).sorted().collect(Collectors.toList());
        assertEquals(List.of(p + "a", p + "b"), keys);

        LeaseTimeToLiveResponse noKeys = await(lease.timeToLive(id, LeaseOption.DEFAULT));
        assertEquals(List.of(), noKeys.getKeys(), "keys only when asked");

        LeaseKeepAliveResponse ka = await(lease.keepAliveOnce(id));
        assertEquals(id, ka.getID());
        assertEquals(60, ka.getTTL());

        long before = await(kv.get(bs(P))).getHeader().getRevision();
        long revoked = await(lease.revoke(id)).getHeader().getRevision();
        assertEquals(before + 1, revoked, "revoking deletes the lease's keys in one revision");
        assertEquals(0, await(kv.get(bs(p), GetOption.builder().isPrefix(true).build())).getCount());
        assertEquals(1, await(kv.get(bs(P + "attached-free"))).getCount(), "other keys stay");

        LeaseTimeToLiveResponse gone = await(lease.timeToLive(id, LeaseOption.builder().withAttachedKeys().build()));
        assertEquals(-1, gone.getTTL(), "a revoked lease has TTL -1");
        assertEquals(List.of(), gone.getKeys());

        assertRpcError(lease.revoke(id), Status.Code.NOT_FOUND, "etcdserver: requested lease not found");
        // keepAliveOnce: the server answers TTL 0 for an unknown lease, and jetcd turns that
        // into its own NOT_FOUND error with etcd's message
        assertRpcError(lease.keepAliveOnce(id), Status.Code.NOT_FOUND, "etcdserver: requested lease not found");
    }

    @BothServers
    void putWithUnknownLeaseFails(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        assertRpcError(kv.put(bs(P + "unknown"), bs("v"), PutOption.builder().withLeaseId(0x1234_5678_9abcL).build()),
            Status.Code.NOT_FOUND, "etcdserver: requested lease not found");
    }

    @BothServers
    void shortLeaseExpiresAndDeletesItsKey(ServerKind kind) {
        Client client = client(kind);
        Lease lease = client.getLeaseClient();
        KV kv = client.getKVClient();
        String k = P + "short";

        long id = await(lease.grant(2)).getID();
        long put = await(kv.put(bs(k), bs("v"), PutOption.builder().withLeaseId(id).build())).getHeader().getRevision();

        WatchCollector c = new WatchCollector();
        Watch.Watcher w = client.getWatchClient().watch(bs(k), WatchOption.builder().withRevision(put + 1).build(), c);
        long start = System.nanoTime();
        WatchEvent del = c.nextEvent(); // etcd expires it within 2 s plus its 0.5 s check interval
        double seconds = (System.nanoTime() - start) / 1e9;
        w.close();
        assertEquals(WatchEvent.EventType.DELETE, del.getEventType());
        assertEquals(k, str(del.getKeyValue().getKey()));
        assertTrue(del.getKeyValue().getModRevision() > put);
        assertTrue(seconds > 0.5, "expired after " + seconds + " s only");
        assertEquals(0, await(kv.get(bs(k))).getCount());
        assertEquals(-1, await(lease.timeToLive(id, LeaseOption.DEFAULT)).getTTL());
    }
}
