package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.ByteSequence;
import io.etcd.jetcd.Client;
import io.etcd.jetcd.KV;
import io.etcd.jetcd.KeyValue;
import io.etcd.jetcd.Lock;
import io.etcd.jetcd.lock.LockResponse;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.LeaseOption;
import java.util.concurrent.CompletableFuture;

/** Lock (v3lock service): lock and unlock with a lease, a second locker waits. */
class LockTest extends CompatTest {
    private static final String P = "/java/lock/";

    @BothServers
    void lockCreatesKeyUnderNameWithLease(ServerKind kind) {
        Client client = client(kind);
        KV kv = client.getKVClient();
        Lock lock = client.getLockClient();
        String name = P + "simple";
        long lease = await(client.getLeaseClient().grant(30)).getID();

        LockResponse held = await(lock.lock(bs(name), lease));
        String key = str(held.getKey());
        // the lock key is "<name>/<lease id in hex>"
        assertEquals(name + "/" + Long.toHexString(lease), key);
        KeyValue kvOfLock = await(kv.get(held.getKey())).getKvs().get(0);
        assertEquals(lease, kvOfLock.getLease());
        assertEquals("", str(kvOfLock.getValue()));
        assertEquals(kvOfLock.getCreateRevision(), held.getHeader().getRevision(),
            "an uncontended lock is granted at its key's creation");

        await(lock.unlock(held.getKey()));
        assertEquals(0, await(kv.get(held.getKey())).getCount(), "unlock deletes the key");
        assertTrue(await(client.getLeaseClient().timeToLive(lease, LeaseOption.DEFAULT)).getTTL() > 0,
            "the lease outlives the lock");
        await(client.getLeaseClient().revoke(lease));
    }

    @BothServers
    void secondLockerWaitsUntilUnlock(ServerKind kind) {
        Client a = Servers.shared(kind).client();
        Client b = Servers.shared(kind).client();
        ByteSequence name = bs(P + "contended");
        long leaseA = await(a.getLeaseClient().grant(30)).getID();
        long leaseB = await(b.getLeaseClient().grant(30)).getID();

        LockResponse first = await(a.getLockClient().lock(name, leaseA));
        long firstCreate = await(a.getKVClient().get(first.getKey())).getKvs().get(0).getCreateRevision();
        CompletableFuture<LockResponse> second = b.getLockClient().lock(name, leaseB);
        assertTrue(stillPending(second, 700), "second locker must wait while the lock is held");

        // both keys exist meanwhile: the waiter's key is created with a later revision
        var under = await(a.getKVClient().get(name, GetOption.builder().isPrefix(true).build()));
        assertEquals(2, under.getCount(), "waiter's key is already there");

        await(a.getLockClient().unlock(first.getKey()));
        LockResponse got = await(second);
        assertEquals(str(name) + "/" + Long.toHexString(leaseB), str(got.getKey()));
        KeyValue k2 = await(b.getKVClient().get(got.getKey())).getKvs().get(0);
        assertTrue(k2.getCreateRevision() > firstCreate, "waiter queued after the holder");

        await(b.getLockClient().unlock(got.getKey()));
        await(a.getLeaseClient().revoke(leaseA));
        await(b.getLeaseClient().revoke(leaseB));
    }

    @BothServers
    void lockIsReleasedWhenItsLeaseIsRevoked(ServerKind kind) {
        Client a = Servers.shared(kind).client();
        Client b = Servers.shared(kind).client();
        ByteSequence name = bs(P + "revoked");
        long leaseA = await(a.getLeaseClient().grant(30)).getID();
        long leaseB = await(b.getLeaseClient().grant(30)).getID();

        await(a.getLockClient().lock(name, leaseA));
        CompletableFuture<LockResponse> second = b.getLockClient().lock(name, leaseB);
        assertTrue(stillPending(second, 300), "second locker must wait while the lock is held");
        await(a.getLeaseClient().revoke(leaseA));
        assertEquals(str(name) + "/" + Long.toHexString(leaseB), str(await(second).getKey()));
        await(b.getLeaseClient().revoke(leaseB));
    }
}
