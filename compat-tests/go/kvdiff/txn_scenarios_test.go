package kvdiff

import (
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Shorthands for clientv3 ops and compares.
var (
	cmp       = clientv3.Compare
	version   = clientv3.Version
	createRev = clientv3.CreateRevision
	modRev    = clientv3.ModRevision
	value     = clientv3.Value
	leaseOf   = clientv3.LeaseValue
	opPut     = clientv3.OpPut
	opGet     = clientv3.OpGet
	opDel     = clientv3.OpDelete
)

func cmps(c ...clientv3.Cmp) []clientv3.Cmp { return c }
func ops(o ...clientv3.Op) []clientv3.Op    { return o }
func opTxn(t tx) clientv3.Op                { return clientv3.OpTxn(t.If, t.Then, t.Else) }

// nGets returns n range ops on distinct keys.
func nGets(prefix string, n int) []clientv3.Op {
	out := make([]clientv3.Op, n)
	for i := range out {
		out[i] = opGet(fmt.Sprintf("%s%03d", prefix, i))
	}
	return out
}

func nPuts(prefix string, n int) []clientv3.Op {
	out := make([]clientv3.Op, n)
	for i := range out {
		out[i] = opPut(fmt.Sprintf("%s%03d", prefix, i), "v")
	}
	return out
}

func nCmps(key string, n int) []clientv3.Cmp {
	out := make([]clientv3.Cmp, n)
	for i := range out {
		out[i] = cmp(version(key), "=", 0)
	}
	return out
}

// emptyOps returns n empty RequestOps (no request set).
func emptyOps(n int) []*pb.RequestOp {
	out := make([]*pb.RequestOp, n)
	for i := range out {
		out[i] = &pb.RequestOp{}
	}
	return out
}

var cmpResults = []string{"=", "!=", ">", "<"}

// compareMatrix runs, for every result and each operand, a txn that puts a
// marker when the compare holds and reads it otherwise.
func compareMatrix(c *C, target string, mk func(string) clientv3.Cmp, operands []any) {
	for _, op := range cmpResults {
		for _, v := range operands {
			c.Note("%s(k) %s %#v", target, op, v)
			c.Txn(tx{
				If:   cmps(cmp(mk("k"), op, v)),
				Then: ops(opPut("marker", fmt.Sprintf("%s %s %v", target, op, v)), opGet("k")),
				Else: ops(opGet("marker")),
			})
		}
	}
}

// seedCompareKey leaves key k at version 3, create_revision 2,
// mod_revision 5, value "v3", no lease; the store is at revision 5.
func seedCompareKey(c *C) {
	c.Put("k", "v1")    // rev 2
	c.Put("k", "v2")    // rev 3
	c.Put("other", "o") // rev 4
	c.Put("k", "v3")    // rev 5
}

var txnScenarios = []scenario{
	{"txn/nested_then_else", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("b", "x") // 3
		// Outer then; the nested txn takes its else, which holds another
		// nested txn taking its then. All writes share revision 4.
		c.Txn(tx{
			If: cmps(cmp(version("a"), "=", 1)),
			Then: ops(
				opPut("c", "c1"),
				opTxn(tx{
					If:   cmps(cmp(value("b"), "=", "y")),
					Then: ops(opPut("d", "d1")),
					Else: ops(
						opGet("c"),
						opPut("e", "e1"),
						opTxn(tx{
							// compares see the state before the outer txn: e is missing
							If:   cmps(cmp(createRev("e"), "=", 0)),
							Then: ops(opGet("e"), opPut("f", "f1"), opGet("", clientv3.WithPrefix())),
							Else: ops(opPut("g", "g1")),
						}),
					),
				}),
				opGet("e"),
				opGet("f", clientv3.WithPrefix()),
			),
			Else: ops(opPut("z", "z")),
		})
		// Outer else, nested then; revision 5.
		c.Txn(tx{
			If:   cmps(cmp(version("a"), "=", 2)),
			Then: ops(opPut("z", "then")),
			Else: ops(
				opTxn(tx{
					If:   cmps(cmp(version("a"), "=", 1), cmp(value("c"), "=", "c1")),
					Then: ops(opGet("a"), opPut("a", "2"), opGet("a")),
					Else: ops(opPut("z", "else")),
				}),
				opPut("z", "outer-else"),
			),
		})
		// A read-only nested txn: nothing changes, no new revision.
		c.Txn(tx{
			Then: ops(opTxn(tx{Then: ops(opGet("a"), opGet("", clientv3.WithPrefix(), clientv3.WithCountOnly()))})),
		})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/per_op_headers", func(c *C) {
		c.Put("a", "1") // 2
		// Delete of a missing key and nothing else: no change, no revision.
		c.Txn(tx{Then: ops(opDel("missing"))})
		// Reads before and after the first write, a no-op delete after a
		// write, a nested txn: each sub-response header has its own revision.
		c.Txn(tx{Then: ops(
			opGet("a"),
			opDel("missing"),
			opPut("a", "2"),
			opGet("a"),
			opDel("missing"),
			opTxn(tx{Then: ops(opGet("a"), opPut("n", "1"))}),
			opDel("a", clientv3.WithPrevKV()),
			opGet("a"),
		)})
		// Read-only txn: headers carry the current revision.
		c.Txn(tx{Then: ops(opGet("n"), opTxn(tx{Then: ops(opGet("n"))}))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/read_your_writes", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("x", "1") // 3
		c.Txn(tx{Then: ops(
			opGet("b"),
			opPut("b", "2"),
			opGet("b"),
			opPut("c", "3", clientv3.WithPrevKV()),
			opGet("", clientv3.WithPrefix()),
			opGet("", clientv3.WithPrefix(), clientv3.WithCountOnly()),
			opDel("a", clientv3.WithPrevKV()),
			opGet("a"),
			opPut("x", "2", clientv3.WithPrevKV()),
			opGet("x"),
			opGet("", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend)),
		)})
		c.Get("", clientv3.WithPrefix())
		// Reading at the txn's own new revision is a "future" revision for
		// the pre-txn checks.
		c.Txn(tx{Then: ops(opPut("y", "1"), opGet("y", clientv3.WithRev(5)))})
		c.Txn(tx{Then: ops(opPut("y", "1"), opGet("y", clientv3.WithRev(4)))})
	}},
	{"txn/range_options", func(c *C) {
		c.Put("k1", "e") // 2
		c.Put("k2", "d") // 3
		c.Put("k3", "c") // 4
		c.Put("k1", "b") // 5
		c.Put("k4", "a") // 6
		c.Put("k2", "f") // 7
		c.Txn(tx{Then: ops(
			opGet("k", clientv3.WithPrefix(), clientv3.WithRev(4)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithLimit(2)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithLimit(2), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortDescend)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithLimit(2), clientv3.WithSort(clientv3.SortByValue, clientv3.SortAscend)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithLimit(1), clientv3.WithRev(5), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortDescend)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithCountOnly()),
			opGet("k", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(3)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithMinModRev(5), clientv3.WithLimit(1)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithMaxCreateRev(3)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithSerializable()),
		)})
		// The same inside a write txn, after its put.
		c.Txn(tx{Then: ops(
			opPut("k5", "0"),
			opGet("k", clientv3.WithPrefix(), clientv3.WithRev(7)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithLimit(2), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(3)),
			opGet("k", clientv3.WithPrefix(), clientv3.WithMinCreateRev(6)),
		)})
	}},
	{"txn/range_compacted_and_future", func(c *C) {
		for i := 0; i < 5; i++ {
			c.Put("r", fmt.Sprint(i)) // 2..6
		}
		c.Compact(4)
		c.Txn(tx{Then: ops(opGet("r", clientv3.WithRev(3)))})
		c.Txn(tx{Then: ops(opGet("r", clientv3.WithRev(4)))})
		c.Txn(tx{Then: ops(opGet("r", clientv3.WithRev(7)))})
		c.Txn(tx{Then: ops(opGet("r", clientv3.WithRev(6)), opPut("s", "1"))})
		// An error in a branch not taken does not matter.
		c.Txn(tx{If: cmps(cmp(version("r"), "=", 0)), Then: ops(opGet("r", clientv3.WithRev(3))), Else: ops(opGet("r"))})
		c.Txn(tx{If: cmps(cmp(version("r"), "=", 5)), Then: ops(opPut("t", "1"), opGet("r", clientv3.WithRev(2)))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/range_negative_revision", func(c *C) {
		// Outside a txn a revision <= 0 means "latest". Inside a txn etcd
		// checks the revision against the compacted revision first
		// (txn.checkRange): before any compaction that is -1, after it the
		// compacted revision, so a negative revision is "compacted".
		c.Put("a", "1") // 2
		c.Put("a", "2") // 3
		c.Get("a", clientv3.WithRev(-1))
		c.Get("a", clientv3.WithRev(-5))
		c.Txn(tx{Then: ops(opGet("a", clientv3.WithRev(-1)))})
		c.Txn(tx{Then: ops(opGet("a", clientv3.WithRev(-5)))})
		c.Compact(2)
		c.Get("a", clientv3.WithRev(-1))
		c.Txn(tx{Then: ops(opGet("a", clientv3.WithRev(-1)))})
		c.Txn(tx{Then: ops(opGet("a", clientv3.WithRev(0)))})
	}},
	{"txn/compare_version", func(c *C) {
		seedCompareKey(c)
		compareMatrix(c, "version", version, []any{2, 3, 4})
	}},
	{"txn/compare_create", func(c *C) {
		seedCompareKey(c)
		compareMatrix(c, "create", createRev, []any{1, 2, 3})
	}},
	{"txn/compare_mod", func(c *C) {
		seedCompareKey(c)
		compareMatrix(c, "mod", modRev, []any{4, 5, 6})
	}},
	{"txn/compare_value", func(c *C) {
		seedCompareKey(c)
		compareMatrix(c, "value", value, []any{"v2", "v3", "v4", "", "v", "v3\x00"})
	}},
	{"txn/compare_lease", func(c *C) {
		seedCompareKey(c)
		compareMatrix(c, "lease", leaseOf, []any{-1, 0, 1})
	}},
	{"txn/compare_lease_attached", func(c *C) {
		seedCompareKey(c)                          // k: no lease, store at 5
		c.LeaseGrant(1000, 60)                     // no revision
		c.Put("k", "v4", clientv3.WithLease(1000)) // 6
		compareMatrix(c, "lease", leaseOf, []any{999, 1000, 1001, 0})
		// Prefix compare over keys with and without the lease.
		c.Put("k2", "x", clientv3.WithLease(1000))
		c.Put("k3", "x")
		c.Txn(tx{If: cmps(cmp(leaseOf("k"), "=", 1000).WithPrefix()), Then: ops(opGet("k", clientv3.WithPrefix()))})
		c.Txn(tx{If: cmps(cmp(leaseOf("k"), "=", 1000).WithRange("k3")), Then: ops(opGet("k", clientv3.WithPrefix()))})
		c.Txn(tx{If: cmps(cmp(leaseOf("k"), "<", 1001).WithPrefix()), Then: ops(opGet("k", clientv3.WithPrefix()))})
	}},
	{"txn/compare_missing_key", func(c *C) {
		// A missing key compares as zeros, except VALUE which is always false.
		targets := []struct {
			name string
			mk   func(string) clientv3.Cmp
			vals []any
		}{
			{"version", version, []any{0, 1, -1}},
			{"create", createRev, []any{0, 1}},
			{"mod", modRev, []any{0, 1}},
			{"value", value, []any{"", "a"}},
			{"lease", leaseOf, []any{0, 1}},
		}
		c.Put("present", "p") // 2
		for _, tg := range targets {
			for _, op := range cmpResults {
				for _, v := range tg.vals {
					c.Note("%s(missing) %s %#v", tg.name, op, v)
					c.Txn(tx{If: cmps(cmp(tg.mk("missing"), op, v)), Then: ops(opGet("present")), Else: ops(opGet("missing"))})
				}
			}
		}
	}},
	{"txn/compare_range_end", func(c *C) {
		c.Put("p/a", "1") // 2
		c.Put("p/b", "1") // 3
		c.Put("p/c", "1") // 4
		t := func(cm clientv3.Cmp) {
			c.Txn(tx{If: cmps(cm), Then: ops(opGet("p/", clientv3.WithPrefix(), clientv3.WithCountOnly())), Else: ops()})
		}
		t(cmp(value("p/"), "=", "1").WithPrefix())
		t(cmp(version("p/"), "=", 1).WithPrefix())
		c.Put("p/c", "2") // 5: now one key differs
		t(cmp(value("p/"), "=", "1").WithPrefix())
		t(cmp(value("p/"), "!=", "3").WithPrefix())
		t(cmp(value("p/"), "<", "2").WithPrefix())
		t(cmp(value("p/a"), "=", "1").WithRange("p/c"))
		t(cmp(version("p/"), "=", 1).WithPrefix())
		t(cmp(version("p/"), ">", 0).WithPrefix())
		t(cmp(createRev("p/"), "<", 5).WithPrefix())
		t(cmp(modRev("p/"), "<", 5).WithPrefix())
		t(cmp(modRev("p/"), "<", 6).WithPrefix())
		t(cmp(leaseOf("p/"), "=", 0).WithPrefix())
		// From a key to the end ("\x00").
		t(cmp(createRev("p/b"), ">", 2).WithRange("\x00"))
		t(cmp(createRev("p/a"), ">", 2).WithRange("\x00"))
		t(cmp(version("\x00"), ">", 0).WithRange("\x00"))
		// Empty ranges: nothing in [q, r), and an inverted range.
		t(cmp(version("q"), "=", 0).WithRange("r"))
		t(cmp(createRev("q"), "=", 0).WithRange("r"))
		t(cmp(modRev("q"), ">", 0).WithRange("r"))
		t(cmp(value("q"), "=", "").WithRange("r"))
		t(cmp(value("q"), "!=", "x").WithRange("r"))
		t(cmp(version("p/c"), "=", 0).WithRange("p/a"))
		t(cmp(value("p/c"), "=", "2").WithRange("p/a"))
	}},
	{"txn/compare_anded", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("b", "2") // 3
		c.Txn(tx{
			If:   cmps(cmp(value("a"), "=", "1"), cmp(value("b"), "=", "2"), cmp(version("c"), "=", 0)),
			Then: ops(opPut("c", "all")),
			Else: ops(opPut("c", "not all")),
		})
		c.Txn(tx{
			If:   cmps(cmp(value("a"), "=", "1"), cmp(value("b"), "=", "x"), cmp(version("c"), "=", 1)),
			Then: ops(opPut("c", "all")),
			Else: ops(opPut("c", "not all"), opGet("c")),
		})
		// Duplicate compares and no compares at all.
		c.Txn(tx{If: cmps(cmp(value("a"), "=", "1"), cmp(value("a"), "=", "1")), Then: ops(opGet("a"))})
		c.Txn(tx{Then: ops(opGet("c")), Else: ops(opPut("c", "never"))})
		c.Txn(tx{})
	}},
	{"txn/compare_raw_oddities", func(c *C) {
		// Compares clientv3 would not build: an operand of another type than
		// the target (compares against the zero value), none at all, and
		// out-of-range enums (etcd does not validate them).
		c.Put("k", "v") // 2
		odd := []*pb.Compare{
			{Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL, Key: []byte("k"), TargetUnion: &pb.Compare_Value{Value: []byte("v")}},
			{Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, Key: []byte("k"), TargetUnion: &pb.Compare_ModRevision{ModRevision: 100}},
			{Target: pb.Compare_VALUE, Result: pb.Compare_GREATER, Key: []byte("k"), TargetUnion: &pb.Compare_Version{Version: 1}},
			{Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, Key: []byte("k"), TargetUnion: &pb.Compare_Version{Version: 1}},
			{Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL, Key: []byte("k")},
			{Target: pb.Compare_LEASE, Result: pb.Compare_EQUAL, Key: []byte("k"), TargetUnion: &pb.Compare_Lease{Lease: 0}},
			{Target: pb.Compare_CompareTarget(9), Result: pb.Compare_EQUAL, Key: []byte("k")},
			{Target: pb.Compare_CompareTarget(9), Result: pb.Compare_LESS, Key: []byte("k")},
			{Target: pb.Compare_VERSION, Result: pb.Compare_CompareResult(7), Key: []byte("k"), TargetUnion: &pb.Compare_Version{Version: 99}},
			{Target: pb.Compare_VALUE, Result: pb.Compare_CompareResult(7), Key: []byte("missing")},
		}
		for i, cm := range odd {
			c.Note("odd compare #%d", i)
			c.RawTxn(&pb.TxnRequest{Compare: []*pb.Compare{cm}, Success: []*pb.RequestOp{rGet("k")}})
		}
	}},
	{"txn/failure_branch_writes", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("b", "1") // 3
		c.Txn(tx{
			If:   cmps(cmp(value("a"), "=", "no")),
			Then: ops(opPut("a", "then"), opDel("b")),
			Else: ops(opPut("c", "else"), opDel("b", clientv3.WithPrevKV()), opGet("b"), opGet("c"), opPut("a", "else", clientv3.WithPrevKV())),
		})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/delete_ranges", func(c *C) {
		for _, k := range []string{"a", "b", "c", "d", "e", "f"} {
			c.Put(k, k) // 2..7
		}
		// Overlapping deletes are allowed; a later one sees the earlier.
		c.Txn(tx{Then: ops(
			opDel("a", clientv3.WithRange("c"), clientv3.WithPrevKV()),
			opDel("b", clientv3.WithRange("d"), clientv3.WithPrevKV()),
			opDel("c"),
			opDel("a", clientv3.WithRange("e")),
			opGet("", clientv3.WithPrefix()),
		)})
		c.Txn(tx{Then: ops(opDel("x"), opDel("y", clientv3.WithPrefix()))})
		c.Txn(tx{Then: ops(opDel("e", clientv3.WithFromKey(), clientv3.WithPrevKV()), opDel("f"))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/duplicate_put_put", func(c *C) {
		c.Txn(tx{Then: ops(opPut("a", "1"), opPut("a", "2"))})
		c.Txn(tx{Else: ops(opPut("a", "1"), opPut("a", "2"))})
		c.Txn(tx{Then: ops(opPut("a", "1")), Else: ops(opPut("a", "2"))}) // then/else may repeat
		c.Txn(tx{Then: ops(opPut("a", "1"), opPut("b", "1")), Else: ops(opPut("c", "1"), opPut("c", "1"))})
		c.Txn(tx{Then: ops(opGet("a"), opGet("a"), opPut("b", "2"))}) // reads do not count
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/duplicate_put_in_deleted_range", func(c *C) {
		c.Put("b", "0") // 2
		c.Txn(tx{Then: ops(opDel("a", clientv3.WithRange("c")), opPut("b", "1"))})
		c.Txn(tx{Then: ops(opPut("b", "1"), opDel("a", clientv3.WithRange("c")))})
		c.Txn(tx{Then: ops(opDel("b"), opPut("b", "1"))})
		c.Txn(tx{Then: ops(opDel("a", clientv3.WithPrefix()), opPut("ab", "1"))})
		c.Txn(tx{Else: ops(opDel("a", clientv3.WithRange("c")), opPut("a", "1"))})
		c.Txn(tx{Then: ops(opDel("a", clientv3.WithRange("c")), opPut("c", "1"))}) // end is exclusive: fine
		c.Txn(tx{Then: ops(opDel("b"), opDel("a", clientv3.WithRange("c")), opDel("b", clientv3.WithRange("bb")), opPut("z", "1"))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/duplicate_from_key_delete", func(c *C) {
		// etcd's duplicate check builds the interval [key, "\x00") for a
		// from-key delete, which is empty: a put in that range is NOT a
		// duplicate; the ops then run in order.
		c.Put("a", "0") // 2
		c.Put("b", "0") // 3
		c.Txn(tx{Then: ops(opDel("a", clientv3.WithFromKey()), opPut("b", "1"))})
		c.Get("", clientv3.WithPrefix())
		c.Txn(tx{Then: ops(opPut("c", "1"), opDel("b", clientv3.WithFromKey()), opGet("", clientv3.WithPrefix()))})
		c.Get("", clientv3.WithPrefix())
		c.Txn(tx{Then: ops(opDel("\x00", clientv3.WithRange("\x00")), opPut("d", "1"))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/duplicate_nested", func(c *C) {
		c.Txn(tx{Then: ops(opPut("a", "1"), opTxn(tx{Then: ops(opPut("a", "2"))}))})
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opPut("a", "2"))}), opPut("a", "1"))})
		c.Txn(tx{Then: ops(opTxn(tx{Else: ops(opPut("a", "2"))}), opPut("a", "1"))})
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opTxn(tx{Then: ops(opPut("a", "3"))}))}), opPut("a", "1"))})
		c.Txn(tx{Then: ops(opDel("a", clientv3.WithRange("c")), opTxn(tx{Then: ops(opPut("b", "1"))}))})
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opDel("a", clientv3.WithRange("c")))}), opPut("b", "1"))})
		// Two nested txns putting one key.
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opPut("a", "1"))}), opTxn(tx{Then: ops(opPut("a", "2"))}))})
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opPut("a", "1"))}), opTxn(tx{Else: ops(opPut("a", "2"))}))})
		// then and else of one nested txn may repeat a key.
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opPut("a", "then")), Else: ops(opPut("a", "else"))}), opPut("b", "1"))})
		c.Txn(tx{Then: ops(opTxn(tx{If: cmps(cmp(version("a"), "=", 0)), Then: ops(opPut("a", "then")), Else: ops(opPut("a", "else"))}))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/duplicate_nested_sibling_order", func(c *C) {
		// A nested txn's deletes are checked only against the puts of the
		// nested txns AFTER it and of the parent level: put-then-delete in
		// sibling nested txns passes, delete-then-put does not.
		c.Put("b", "0") // 2
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opPut("b", "1"))}), opTxn(tx{Then: ops(opDel("a", clientv3.WithRange("c")))}))})
		c.Get("", clientv3.WithPrefix())
		c.Txn(tx{Then: ops(opTxn(tx{Then: ops(opDel("a", clientv3.WithRange("c")))}), opTxn(tx{Then: ops(opPut("b", "1"))}))})
		// then puts, else deletes the same key in one nested txn: allowed.
		c.Txn(tx{Then: ops(opTxn(tx{If: cmps(cmp(version("b"), "=", 0)), Then: ops(opPut("b", "2")), Else: ops(opDel("b"))}))})
		c.Txn(tx{Then: ops(opTxn(tx{If: cmps(cmp(version("b"), "=", 0)), Then: ops(opPut("b", "2")), Else: ops(opDel("b"))}))})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/too_many_ops", func(c *C) {
		c.Txn(tx{Then: nPuts("p", 128)})
		c.Txn(tx{Then: nGets("g", 129)})
		c.Txn(tx{Else: nGets("g", 129)})
		c.Txn(tx{If: nCmps("zz", 129)})
		c.Txn(tx{If: nCmps("zz", 128), Then: nGets("g", 128), Else: nGets("g", 128)}) // the longest list counts, not the sum
		c.Txn(tx{Then: nPuts("q", 129)})
		c.Get("", clientv3.WithPrefix(), clientv3.WithCountOnly())
	}},
	{"txn/too_many_ops_nested", func(c *C) {
		// A nested txn gets what its parent's longest list leaves: 128-100.
		parent := func(nested clientv3.Op) []clientv3.Op { return append(nGets("g", 99), nested) }
		c.Txn(tx{Then: parent(opTxn(tx{Then: nGets("n", 28)}))})
		c.Txn(tx{Then: parent(opTxn(tx{Then: nGets("n", 29)}))})
		c.Txn(tx{Then: parent(opTxn(tx{If: nCmps("zz", 29)}))})
		c.Txn(tx{Else: parent(opTxn(tx{Else: nGets("n", 29)}))})
		c.Txn(tx{If: nCmps("zz", 100), Then: ops(opTxn(tx{Then: nGets("n", 29)}))})
		// Two levels: the grandchild gets 28-20.
		child := func(n int) clientv3.Op {
			return opTxn(tx{Then: append(nGets("c", 19), opTxn(tx{Then: nGets("gc", n)}))})
		}
		c.Txn(tx{Then: parent(child(8))})
		c.Txn(tx{Then: parent(child(9))})
	}},
	{"txn/empty_key", func(c *C) {
		c.Put("a", "1") // 2
		c.Txn(tx{If: cmps(cmp(version(""), "=", 0)), Then: ops(opGet("a"))})
		c.Txn(tx{Then: ops(opPut("", "x"))})
		c.Txn(tx{Then: ops(opGet(""))})
		c.Txn(tx{Then: ops(opDel(""))})
		c.Txn(tx{If: cmps(cmp(version("a"), "=", 1)), Then: ops(opGet("a")), Else: ops(opPut("", "x"))})
		c.Txn(tx{Then: ops(opTxn(tx{Else: ops(opDel(""))}))})
		c.Put("", "x")
		c.Get("")
		c.Delete("")
		c.Get("a")
	}},
	{"txn/empty_requestop", func(c *C) {
		c.Put("a", "1") // 2
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{}}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rGet("a")}, Failure: []*pb.RequestOp{{}}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{{}}})}})
		// A present but empty RangeRequest/PutRequest/DeleteRangeRequest has no key.
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rRange(&pb.RangeRequest{})}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rPutReq(&pb.PutRequest{})}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{}}}}})
		// An empty nested txn is fine.
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rTxn(&pb.TxnRequest{}), rGet("a")}})
		// Order of the checks: too many ops, then compares, then success, then failure.
		c.RawTxn(&pb.TxnRequest{Compare: []*pb.Compare{{}}, Success: []*pb.RequestOp{{}}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{}}, Failure: []*pb.RequestOp{rPut("", "x")}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rPut("", "x")}, Failure: []*pb.RequestOp{{}}})
		c.RawTxn(&pb.TxnRequest{Success: append(emptyOps(128), rGet("a"))})
		c.RawTxn(&pb.TxnRequest{Success: emptyOps(129)})
		// Validation comes before the duplicate check.
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rPut("a", "1"), rPut("a", "2"), {}}})
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rPut("a", "1"), rPut("a", "2")}, Failure: []*pb.RequestOp{rGet("")}})
		c.Get("a")
	}},
	{"txn/put_checks_in_branches", func(c *C) {
		c.Put("a", "1") // 2
		// Lease and ignore_* checks apply to the branch taken only.
		c.Txn(tx{Then: ops(opPut("x", "1", clientv3.WithLease(12345)))})
		c.Txn(tx{If: cmps(cmp(version("a"), "=", 1)), Then: ops(opPut("x", "1")), Else: ops(opPut("y", "1", clientv3.WithLease(12345)))})
		c.Txn(tx{Then: ops(opPut("missing", "", clientv3.WithIgnoreValue()))})
		c.Txn(tx{Then: ops(opPut("missing", "v", clientv3.WithIgnoreLease()))})
		c.Txn(tx{If: cmps(cmp(version("a"), "=", 5)), Then: ops(opPut("missing", "", clientv3.WithIgnoreValue())), Else: ops(opGet("a"))})
		c.Txn(tx{Then: ops(opPut("a", "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV()), opPut("b", "new", clientv3.WithPrevKV()))})
		c.Txn(tx{Then: ops(opPut("a", "2", clientv3.WithIgnoreLease(), clientv3.WithPrevKV()))})
		// Validation (value with ignore_value) applies to both branches.
		c.RawTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{rPutReq(&pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true})}})
		c.RawTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{rPutReq(&pb.PutRequest{Key: []byte("a"), Lease: 7, IgnoreLease: true})}})
		c.Get("", clientv3.WithPrefix())
	}},
	{"txn/one_revision_for_all_writes", func(c *C) {
		c.Put("a", "0")                                                                      // 2
		c.Txn(tx{Then: ops(opPut("c", "1"), opPut("b", "1"), opPut("a", "1"), opDel("zz"))}) // 3
		c.Get("", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByModRevision, clientv3.SortAscend))
		c.Txn(tx{Then: ops(opDel("a"), opPut("d", "1"), opDel("b", clientv3.WithPrevKV()))}) // 4
		c.Get("", clientv3.WithPrefix())
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(3))
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(2))
		// Nothing changed: no new revision.
		c.Txn(tx{Then: ops(opDel("a"), opDel("b"), opGet("c"))})
		c.Put("e", "1") // 5
	}},
}
