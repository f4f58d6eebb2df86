package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.KV;
import io.etcd.jetcd.KeyValue;
import io.etcd.jetcd.kv.DeleteResponse;
import io.etcd.jetcd.kv.GetResponse;
import io.etcd.jetcd.kv.PutResponse;
import io.etcd.jetcd.options.DeleteOption;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.PutOption;
import java.util.List;
import java.util.stream.Collectors;

/** KV: put, get, prefix reads, delete, prev_kv and revisions (shared server, own prefix). */
class KvTest extends CompatTest {
    private static final String P = "/java/kv/";

    private static List<String> keys(GetResponse r) {
        return r.getKvs().stream().map(kv -> str(kv.getKey())).collect(Collectors.toList());
    }

    private static List<String> values(List<KeyValue> kvs) {
        return kvs.stream().map(kv -> str(kv.getValue())).collect(Collectors.toList());
    }

    @BothServers
    void putThenGetReturnsValueAndMetadata(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String k = P + "put-get";
        PutResponse put = await(kv.put(bs(k), bs("v1")));
        long rev = put.getHeader().getRevision();
        assertTrue(rev > 1, "revision after a put: " + rev);
        assertFalse(put.hasPrevKv(), "no prev_kv unless asked");

        GetResponse get = await(kv.get(bs(k)));
        assertEquals(1, get.getCount());
        KeyValue got = get.getKvs().get(0);
        assertEquals(k, str(got.getKey()));
        assertEquals("v1", str(got.getValue()));
        assertEquals(rev, got.getCreateRevision());
        assertEquals(rev, got.getModRevision());
        assertEquals(1, got.getVersion());
        assertEquals(0, got.getLease());
        assertEquals(rev, get.getHeader().getRevision(), "a read does not move the revision");
    }

    @BothServers
    void putWithPrevKvAndRevisions(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String k = P + "prev-kv";
        long r1 = await(kv.put(bs(k), bs("a"))).getHeader().getRevision();
        PutResponse p2 = await(kv.put(bs(k), bs("b"), PutOption.builder().withPrevKV().build()));
        assertEquals(r1 + 1, p2.getHeader().getRevision(), "each put moves the revision by one");
        assertTrue(p2.hasPrevKv());
        assertEquals("a", str(p2.getPrevKv().getValue()));
        assertEquals(r1, p2.getPrevKv().getModRevision());
        assertEquals(1, p2.getPrevKv().getVersion());

        KeyValue now = await(kv.get(bs(k))).getKvs().get(0);
        assertEquals("b", str(now.getValue()));
        assertEquals(r1, now.getCreateRevision());
        assertEquals(r1 + 1, now.getModRevision());
        assertEquals(2, now.getVersion());

        GetResponse old = await(kv.get(bs(k), GetOption.builder().withRevision(r1).build()));
        assertEquals("a", str(old.getKvs().get(0).getValue()), "a read at the first put's revision");
        assertEquals(r1 + 1, old.getHeader().getRevision(), "header revision is the current one");
    }

    @BothServers
    void getMissingKey(ServerKind kind) {
        GetResponse r = await(client(kind).getKVClient().get(bs(P + "missing")));
        assertEquals(0, r.getCount());
        assertTrue(r.getKvs().isEmpty());
        assertFalse(r.isMore());
    }

    @BothServers
    void prefixGetLimitCountAndKeysOnly(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String p = P + "prefix/";
        // inserted out of order; one key just outside the prefix ("prefix0" > "prefix/")
        for (String s : List.of("c", "a", "b")) {
            await(kv.put(bs(p + s), bs("val-" + s)));
        }
        await(kv.put(bs(P + "prefix0"), bs("outside")));

        GetResponse all = await(kv.get(bs(p), GetOption.builder().isPrefix(true).build()));
        assertEquals(List.of(p + "a", p + "b", p + "c"), keys(all), "sorted by key");
        assertEquals(List.of("val-a", "val-b", "val-c"), values(all.getKvs()));
        assertEquals(3, all.getCount());
        assertFalse(all.isMore());

        GetResponse limited = await(kv.get(bs(p), GetOption.builder().isPrefix(true).withLimit(2).build()));
        assertEquals(List.of(p + "a", p + "b"), keys(limited));
        assertEquals(3, limited.getCount(), "count is the whole range's");
        assertTrue(limited.isMore());

        GetResponse counted = await(kv.get(bs(p), GetOption.builder().isPrefix(true).withCountOnly(true).build()));
        assertEquals(3, counted.getCount());
        assertTrue(counted.getKvs().isEmpty());

        GetResponse keysOnly = await(kv.get(bs(p), GetOption.builder().isPrefix(true).withKeysOnly(true).build()));
        assertEquals(List.of(p + "a", p + "b", p + "c"), keys(keysOnly));
        assertEquals(List.of("", "", ""), values(keysOnly.getKvs()));

        GetResponse desc = await(kv.get(bs(p), GetOption.builder().isPrefix(true)
            .withSortField(GetOption.SortTarget.KEY).withSortOrder(GetOption.SortOrder.DESCEND).build()));
        assertEquals(List.of(p + "c", p + "b", p + "a"), keys(desc));

        GetResponse range = await(kv.get(bs(p + "a"), GetOption.builder().withRange(bs(p + "c")).build()));
        assertEquals(List.of(p + "a", p + "b"), keys(range), "range end is exclusive");
    }

    @BothServers
    void deleteKeyPrefixAndPrevKvs(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String p = P + "delete/";
        for (String s : List.of("x", "y", "z")) {
            await(kv.put(bs(p + s), bs("v" + s)));
        }
        await(kv.put(bs(P + "delete-keep"), bs("stays")));

        DeleteResponse one = await(kv.delete(bs(p + "x")));
        assertEquals(1, one.getDeleted());
        assertTrue(one.getPrevKvs().isEmpty(), "no prev_kvs unless asked");
        long afterOne = one.getHeader().getRevision();

        DeleteResponse none = await(kv.delete(bs(p + "x")));
        assertEquals(0, none.getDeleted());
        assertEquals(afterOne, none.getHeader().getRevision(), "deleting nothing keeps the revision");

        DeleteResponse rest = await(kv.delete(bs(p), DeleteOption.builder().isPrefix(true).withPrevKV(true).build()));
        assertEquals(2, rest.getDeleted());
        assertEquals(afterOne + 1, rest.getHeader().getRevision(), "one revision for the whole range");
        assertEquals(List.of("vy", "vz"), values(rest.getPrevKvs()));

        assertEquals(0, await(kv.get(bs(p), GetOption.builder().isPrefix(true).build())).getCount());
        assertEquals("stays", str(await(kv.get(bs(P + "delete-keep"))).getKvs().get(0).getValue()));

        // a key deleted and put again starts over at version 1 with a new create revision
        long re = await(kv.put(bs(p + "x"), bs("again"))).getHeader().getRevision();
        KeyValue back = await(kv.get(bs(p + "x"))).getKvs().get(0);
        assertEquals(1, back.getVersion());
        assertEquals(re, back.getCreateRevision());
    }
}
