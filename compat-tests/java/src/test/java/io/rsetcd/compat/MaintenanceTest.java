package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.Client;
import io.etcd.jetcd.KV;
import io.etcd.jetcd.Maintenance;
import io.etcd.jetcd.maintenance.HashKVResponse;
import io.etcd.jetcd.maintenance.StatusResponse;
import java.io.ByteArrayOutputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.List;

/** Maintenance: status, hashKV, defragment and the snapshot stream. */
class MaintenanceTest extends CompatTest {
    private static final String P = "/java/maintenance/";

    @BothServers
    void statusReportsVersionLeaderAndDbSize(ServerKind kind) {
        EtcdServer server = Servers.shared(kind);
        Client client = server.client();
        long rev = await(client.getKVClient().put(bs(P + "status"), bs("v"))).getHeader().getRevision();

        StatusResponse s = await(client.getMaintenanceClient().statusMember(server.clientUrl()));
        assertEquals(Servers.referenceVersion(), s.getVersion(), "rsetcd reports etcd's version");
        long self = s.getHeader().getMemberId();
        assertNotEquals(0, self);
        assertEquals(self, s.getLeader(), "a single member leads itself");
        assertTrue(s.getDbSize() > 0, "db size " + s.getDbSize());
        assertTrue(s.getDbSizeInUse() > 0 && s.getDbSizeInUse() <= s.getDbSize(),
            "db size in use " + s.getDbSizeInUse() + " of " + s.getDbSize());
        assertTrue(s.getRaftTerm() >= 1, "raft term " + s.getRaftTerm());
        assertTrue(s.getRaftIndex() > 0, "raft index " + s.getRaftIndex());
        assertTrue(s.getRaftAppliedIndex() >= s.getRaftIndex() - 1 && s.getRaftAppliedIndex() > 0,
            "applied index " + s.getRaftAppliedIndex() + " vs index " + s.getRaftIndex());
        assertEquals(List.of(), s.getErrorList());
        assertEquals(false, s.isLearner());
        assertTrue(s.getHeader().getRevision() >= rev);

        long index = s.getRaftIndex();
        await(client.getKVClient().put(bs(P + "status"), bs("w")));
        StatusResponse s2 = await(client.getMaintenanceClient().statusMember(server.clientUrl()));
        assertTrue(s2.getRaftIndex() > index, "a write moves the raft index: " + index + " -> " + s2.getRaftIndex());
    }

    @BothServers
    void hashKvIsStableForAPastRevision(ServerKind kind) {
        EtcdServer server = Servers.shared(kind);
        Client client = server.client();
        KV kv = client.getKVClient();
        Maintenance m = client.getMaintenanceClient();
        long r1 = await(kv.put(bs(P + "hash"), bs("1"))).getHeader().getRevision();

        HashKVResponse h1 = await(m.hashKV(server.clientUrl(), r1));
        HashKVResponse again = await(m.hashKV(server.clientUrl(), r1));
        assertEquals(h1.getHash(), again.getHash(), "same revision, same hash");
        assertEquals(r1, h1.getHeader().getRevision());

        long r2 = await(kv.put(bs(P + "hash"), bs("2"))).getHeader().getRevision();
        HashKVResponse atR1 = await(m.hashKV(server.clientUrl(), r1));
        assertEquals(h1.getHash(), atR1.getHash(), "a later write does not change the hash at r1");
        assertEquals(r2, atR1.getHeader().getRevision(), "header revision is the current one");

        HashKVResponse latest = await(m.hashKV(server.clientUrl(), 0));
        assertNotEquals(h1.getHash(), latest.getHash(), "revision 0 hashes up to the newest write");
        assertEquals(latest.getHash(), await(m.hashKV(server.clientUrl(), r2)).getHash(), "0 means the current revision");
    }

    @BothServers
    void defragmentSucceedsAndKeepsData(ServerKind kind) {
        EtcdServer server = Servers.shared(kind);
        Client client = server.client();
        KV kv = client.getKVClient();
        await(kv.put(bs(P + "defrag"), bs("kept")));
        await(client.getMaintenanceClient().defragmentMember(server.clientUrl()));
        assertEquals("kept", str(await(kv.get(bs(P + "defrag"))).getKvs().get(0).getValue()));
        StatusResponse s = await(client.getMaintenanceClient().statusMember(server.clientUrl()));
        assertTrue(s.getDbSize() > 0);
    }

    @BothServers
    void snapshotEndsWithSha256OfTheRest(ServerKind kind) throws NoSuchAlgorithmException {
        Client client = client(kind);
        await(client.getKVClient().put(bs(P + "snapshot"), bs("in the snapshot")));
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        long n = await(client.getMaintenanceClient().snapshot(out));
        byte[] bytes = out.toByteArray();
        assertEquals(bytes.length, n, "the count returned is the bytes written");
        assertTrue(bytes.length > 32 + 4096, "snapshot of " + bytes.length + " bytes");
        byte[] body = Arrays.copyOfRange(bytes, 0, bytes.length - 32);
        byte[] trailer = Arrays.copyOfRange(bytes, bytes.length - 32, bytes.length);
        assertArrayEquals(MessageDigest.getInstance("SHA-256").digest(body), trailer,
            "the last 32 bytes are the sha256 of the rest");
    }
}
