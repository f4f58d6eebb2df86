package io.rsetcd.compat;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.etcd.jetcd.KV;
import io.etcd.jetcd.kv.TxnResponse;
import io.etcd.jetcd.op.Cmp;
import io.etcd.jetcd.op.CmpTarget;
import io.etcd.jetcd.op.Op;
import io.etcd.jetcd.options.DeleteOption;
import io.etcd.jetcd.options.GetOption;
import io.etcd.jetcd.options.PutOption;

/** Txn: compares on value and version, then and else branches, results and revisions. */
class TxnTest extends CompatTest {
    private static final String P = "/java/txn/";

    @BothServers
    void valueCompareTakesThenBranch(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String k = P + "value";
        long r0 = await(kv.put(bs(k), bs("v1"))).getHeader().getRevision();

        TxnResponse t = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.EQUAL, CmpTarget.value(bs("v1"))))
            .Then(Op.put(bs(k), bs("v2"), PutOption.DEFAULT),
                Op.put(bs(P + "value-other"), bs("o"), PutOption.DEFAULT),
                Op.get(bs(k), GetOption.DEFAULT))
            .Else(Op.put(bs(k), bs("else"), PutOption.DEFAULT))
            .commit());
        assertTrue(t.isSucceeded());
        assertEquals(2, t.getPutResponses().size());
        assertEquals(1, t.getGetResponses().size());
        assertEquals("v2", str(t.getGetResponses().get(0).getKvs().get(0).getValue()),
            "a get after a put in the same txn sees the put");
        assertEquals(r0 + 1, t.getHeader().getRevision(), "one revision for the whole txn");
        assertEquals(r0 + 1, t.getGetResponses().get(0).getKvs().get(0).getModRevision());
        assertEquals(r0 + 1, await(kv.get(bs(P + "value-other"))).getKvs().get(0).getModRevision(),
            "both puts share the txn's revision");
    }

    @BothServers
    void valueMismatchTakesElseBranch(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String k = P + "mismatch";
        await(kv.put(bs(k), bs("v1")));

        TxnResponse t = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.EQUAL, CmpTarget.value(bs("nope"))))
            .Then(Op.put(bs(k), bs("then"), PutOption.DEFAULT))
            .Else(Op.put(bs(P + "mismatch-else"), bs("e"), PutOption.DEFAULT), Op.get(bs(k), GetOption.DEFAULT))
            .commit());
        assertFalse(t.isSucceeded());
        assertEquals(1, t.getPutResponses().size());
        assertEquals("v1", str(t.getGetResponses().get(0).getKvs().get(0).getValue()), "then branch not applied");
        assertEquals("e", str(await(kv.get(bs(P + "mismatch-else"))).getKvs().get(0).getValue()));
    }

    @BothServers
    void versionCompares(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String k = P + "version";
        await(kv.put(bs(k), bs("a")));
        await(kv.put(bs(k), bs("b")));

        TxnResponse eq = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.EQUAL, CmpTarget.version(2)))
            .Then(Op.put(bs(k), bs("c"), PutOption.DEFAULT))
            .commit());
        assertTrue(eq.isSucceeded(), "version is 2 after two puts");

        TxnResponse gt = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.GREATER, CmpTarget.version(5)))
            .Then(Op.put(bs(k), bs("then"), PutOption.DEFAULT))
            .Else(Op.delete(bs(k), DeleteOption.builder().withPrevKV(true).build()))
            .commit());
        assertFalse(gt.isSucceeded());
        assertEquals(1, gt.getDeleteResponses().size());
        assertEquals(1, gt.getDeleteResponses().get(0).getDeleted());
        assertEquals("c", str(gt.getDeleteResponses().get(0).getPrevKvs().get(0).getValue()));
        assertEquals(3, gt.getDeleteResponses().get(0).getPrevKvs().get(0).getVersion());

        // a missing key has version 0: the usual "create if absent" txn
        TxnResponse create = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.EQUAL, CmpTarget.version(0)))
            .Then(Op.put(bs(k), bs("created"), PutOption.DEFAULT))
            .commit());
        assertTrue(create.isSucceeded());
        TxnResponse again = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.EQUAL, CmpTarget.version(0)))
            .Then(Op.put(bs(k), bs("twice"), PutOption.DEFAULT))
            .commit());
        assertFalse(again.isSucceeded());
        assertEquals("created", str(await(kv.get(bs(k))).getKvs().get(0).getValue()));
    }

    @BothServers
    void modRevisionCompareAndReadOnlyTxn(ServerKind kind) {
        KV kv = client(kind).getKVClient();
        String k = P + "modrev";
        long r = await(kv.put(bs(k), bs("x"))).getHeader().getRevision();

        TxnResponse ok = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.EQUAL, CmpTarget.modRevision(r)),
                new Cmp(bs(k), Cmp.Op.LESS, CmpTarget.createRevision(r + 1)))
            .Then(Op.get(bs(k), GetOption.DEFAULT))
            .commit());
        assertTrue(ok.isSucceeded());
        assertEquals(r, ok.getHeader().getRevision(), "a txn without writes keeps the revision");

        TxnResponse neq = await(kv.txn()
            .If(new Cmp(bs(k), Cmp.Op.NOT_EQUAL, CmpTarget.value(bs("x"))))
            .commit());
        assertFalse(neq.isSucceeded());
        assertTrue(neq.getGetResponses().isEmpty() && neq.getPutResponses().isEmpty());
    }
}
