package kvdiff

import (
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	kib = 1024
	mib = 1024 * kib
	// etcd's default --max-request-bytes; gRPC accepts messages up to this
	// plus 512 KiB, and etcd refuses raft proposals larger than this.
	defaultMaxRequestBytes = 3 * mib / 2
)

// seedSortData writes keys s/a..s/g so that every sort target orders them
// differently, with ties on version and on value (store ends at rev 11):
//
//	key  create mod ver value
//	s/a  3      7   2   "4"
//	s/b  5      5   1   "5"
//	s/c  2      9   2   "6"
//	s/d  6      6   1   "2"
//	s/e  4      10  2   "1"
//	s/f  8      8   1   "0"
//	s/g  11     11  1   "4"
func seedSortData(c *C) {
	for _, kv := range [][2]string{
		{"s/c", "3"}, {"s/a", "5"}, {"s/e", "1"}, {"s/b", "5"}, {"s/d", "2"},
		{"s/a", "4"}, {"s/f", "0"}, {"s/c", "6"}, {"s/e", "1"}, {"s/g", "4"},
	} {
		c.Put(kv[0], kv[1])
	}
}

var sortTargets = []clientv3.SortTarget{
	clientv3.SortByKey, clientv3.SortByVersion, clientv3.SortByCreateRevision,
	clientv3.SortByModRevision, clientv3.SortByValue,
}

var sortOrders = []clientv3.SortOrder{clientv3.SortNone, clientv3.SortAscend, clientv3.SortDescend}

// rangeReq is a raw RangeRequest on a prefix.
func prefixRange(prefix string) *pb.RangeRequest {
	return &pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(clientv3.GetPrefixRangeEnd(prefix))}
}

var kvScenarios = []scenario{
	// ---- Put ----
	{"put/ignore_value", func(c *C) {
		c.Put("a", "v1") // 2
		c.Put("a", "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV())
		c.Get("a")
		c.Put("missing", "", clientv3.WithIgnoreValue())
		c.RawPut(&pb.PutRequest{Key: []byte("a"), Value: []byte("x"), IgnoreValue: true})
		c.RawPut(&pb.PutRequest{Key: []byte("missing"), Value: []byte("x"), IgnoreValue: true})
		c.RawPut(&pb.PutRequest{Key: []byte("a"), IgnoreValue: true, PrevKv: true})
		c.Get("a")
		c.Get("missing")
	}},
	{"put/ignore_lease", func(c *C) {
		c.Put("a", "v1") // 2
		c.Put("a", "v2", clientv3.WithIgnoreLease(), clientv3.WithPrevKV())
		c.Put("missing", "v", clientv3.WithIgnoreLease())
		c.RawPut(&pb.PutRequest{Key: []byte("a"), Value: []byte("v3"), Lease: 5, IgnoreLease: true})
		c.RawPut(&pb.PutRequest{Key: []byte("missing"), Lease: 5, IgnoreLease: true})
		// Both flags: rewrite the same value and lease (a "touch").
		c.RawPut(&pb.PutRequest{Key: []byte("a"), IgnoreValue: true, IgnoreLease: true, PrevKv: true})
		c.RawPut(&pb.PutRequest{Key: []byte("missing"), IgnoreValue: true, IgnoreLease: true})
		// Both errors at once: value_provided is checked first.
		c.RawPut(&pb.PutRequest{Key: []byte("a"), Value: []byte("x"), Lease: 5, IgnoreValue: true, IgnoreLease: true})
		c.Get("a")
	}},
	{"put/prev_kv", func(c *C) {
		c.Put("a", "1", clientv3.WithPrevKV()) // new key: no prev_kv
		c.Put("a", "2", clientv3.WithPrevKV())
		c.Put("a", "", clientv3.WithPrevKV())
		c.Put("a", "3", clientv3.WithPrevKV()) // prev value empty
		c.Delete("a")
		c.Put("a", "4", clientv3.WithPrevKV())
		c.Put("b", "1")
		c.Get("", clientv3.WithPrefix())
	}},
	{"put/lease_not_found", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("a", "2", clientv3.WithLease(12345))
		c.Put("new", "2", clientv3.WithLease(12345), clientv3.WithPrevKV())
		c.RawPut(&pb.PutRequest{Key: []byte("a"), Value: []byte("3"), Lease: -1})
		c.RawPut(&pb.PutRequest{Key: []byte("missing"), Lease: 12345, IgnoreValue: true})
		c.Get("", clientv3.WithPrefix())
	}},
	{"put/lease_attach_detach_revoke", func(c *C) {
		c.LeaseGrant(1000, 60)
		c.LeaseGrant(1000, 60) // exists
		c.LeaseGrant(2000, 60)
		c.Put("a", "1", clientv3.WithLease(1000))                            // 2
		c.Put("a", "2", clientv3.WithIgnoreLease(), clientv3.WithPrevKV())   // 3: keeps lease 1000
		c.Put("a", "", clientv3.WithIgnoreValue(), clientv3.WithLease(2000)) // 4: moves to 2000
		c.Get("a")
		c.Put("a", "3", clientv3.WithPrevKV()) // 5: no lease given: detached
		c.Put("b", "1", clientv3.WithLease(1000))
		c.Put("c", "1", clientv3.WithLease(1000))
		c.Txn(tx{Then: ops(opPut("d", "1", clientv3.WithLease(2000)), opPut("a", "4", clientv3.WithLease(1000)))})
		c.Get("", clientv3.WithPrefix())
		c.LeaseRevoke(1000) // deletes a, b, c at one revision
		c.Get("", clientv3.WithPrefix())
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(8))
		c.LeaseRevoke(1000)
		c.Put("e", "1", clientv3.WithLease(1000))
		c.LeaseRevoke(2000)
		c.Get("", clientv3.WithPrefix())
	}},
	{"put/empty_and_binary", func(c *C) {
		c.Put("\x00", "")
		c.Put("\xff\xff", "\x00\x01\xff")
		c.Put("k", "")
		c.Put("k", "", clientv3.WithPrevKV())
		c.Put("k\x00k", strings.Repeat("x", 300))
		c.Get("\x00", clientv3.WithFromKey())
		c.Get("k", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		c.Put("", "x")
		c.RawPut(&pb.PutRequest{})
	}},

	// ---- Range ----
	{"range/invalid_sort_enums", func(c *C) {
		c.Put("a", "1") // 2
		for _, r := range []*pb.RangeRequest{
			{Key: []byte("a"), SortOrder: pb.RangeRequest_SortOrder(3)},
			{Key: []byte("a"), SortTarget: pb.RangeRequest_SortTarget(5)},
			{Key: []byte("a"), SortOrder: pb.RangeRequest_SortOrder(-1)},
			{Key: []byte("a"), SortTarget: pb.RangeRequest_SortTarget(-1)},
			{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_SortTarget(100)},
			{Key: []byte("a"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_VALUE},
			{SortOrder: pb.RangeRequest_SortOrder(3)}, // empty key is checked first
		} {
			c.RawRange(r)
		}
		c.RawTxn(&pb.TxnRequest{Success: []*pb.RequestOp{rRange(&pb.RangeRequest{Key: []byte("a"), SortOrder: 9})}})
		c.RawTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{rRange(&pb.RangeRequest{Key: []byte("a"), SortTarget: 9})}})
	}},
	{"range/sort_every_target", func(c *C) {
		seedSortData(c)
		for _, tg := range sortTargets {
			for _, or := range sortOrders {
				c.Note("sort %v %v", tg, or)
				c.Get("s/", clientv3.WithPrefix(), clientv3.WithSort(tg, or))
			}
		}
		// A read at an older revision is sorted too.
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithRev(7), clientv3.WithSort(clientv3.SortByVersion, clientv3.SortDescend))
	}},
	{"range/sort_every_target_with_limit", func(c *C) {
		// With limit, a non-KEY target and order NONE, etcd fetches limit+1
		// keys in key order first and sorts those (the limit is applied
		// before sorting only when sort_order is NONE).
		seedSortData(c)
		for _, tg := range sortTargets {
			for _, or := range sortOrders {
				for _, lim := range []int64{1, 2, 7, 8} {
					c.Note("sort %v %v limit %d", tg, or, lim)
					c.Get("s/", clientv3.WithPrefix(), clientv3.WithSort(tg, or), clientv3.WithLimit(lim))
				}
			}
		}
	}},
	{"range/min_max_filters_with_limit", func(c *C) {
		seedSortData(c)
		type f struct {
			name string
			opts []clientv3.OpOption
		}
		for _, fl := range []f{
			{"min_mod 7", []clientv3.OpOption{clientv3.WithMinModRev(7)}},
			{"max_mod 7", []clientv3.OpOption{clientv3.WithMaxModRev(7)}},
			{"min_create 5", []clientv3.OpOption{clientv3.WithMinCreateRev(5)}},
			{"max_create 5", []clientv3.OpOption{clientv3.WithMaxCreateRev(5)}},
			{"mod 6..9", []clientv3.OpOption{clientv3.WithMinModRev(6), clientv3.WithMaxModRev(9)}},
			{"create 3..6 mod 7..", []clientv3.OpOption{clientv3.WithMinCreateRev(3), clientv3.WithMaxCreateRev(6), clientv3.WithMinModRev(7)}},
			{"min_mod 100", []clientv3.OpOption{clientv3.WithMinModRev(100)}},
		} {
			for _, lim := range []int64{0, 1, 2, 3} {
				c.Note("%s limit %d", fl.name, lim)
				c.Get("s/", append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(lim)}, fl.opts...)...)
			}
			c.Note("%s limit 2 sorted by value desc", fl.name)
			c.Get("s/", append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithLimit(2), clientv3.WithSort(clientv3.SortByValue, clientv3.SortDescend)}, fl.opts...)...)
			c.Note("%s count_only", fl.name)
			c.Get("s/", append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}, fl.opts...)...)
			c.Note("%s at rev 8", fl.name)
			c.Get("s/", append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(8)}, fl.opts...)...)
		}
		// Negative filters via raw requests.
		c.RawRange(&pb.RangeRequest{Key: []byte("s/"), RangeEnd: []byte("s0"), MinModRevision: -1, MaxCreateRevision: -1})
	}},
	{"range/count_keys_only_limit", func(c *C) {
		seedSortData(c)
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(2))
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithLimit(2), clientv3.WithSort(clientv3.SortByValue, clientv3.SortAscend))
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithCountOnly(), clientv3.WithRev(5))
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(3))
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithCountOnly())
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithLimit(7))
		c.Get("s/", clientv3.WithPrefix(), clientv3.WithLimit(6))
		c.RawRange(&pb.RangeRequest{Key: []byte("s/"), RangeEnd: []byte("s0"), Limit: -1})
		c.Get("s/a", clientv3.WithCountOnly())
		c.Get("nothing", clientv3.WithPrefix(), clientv3.WithCountOnly())
	}},
	{"range/revisions", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("b", "1") // 3
		c.Put("a", "2") // 4
		c.Delete("b")   // 5
		c.Put("c", "1") // 6
		for _, rev := range []int64{1, 2, 3, 4, 5, 6, 7, 100, 0, -1} {
			c.Note("rev %d", rev)
			c.Get("", clientv3.WithPrefix(), clientv3.WithRev(rev))
		}
		c.Compact(4)
		for _, rev := range []int64{2, 3, 4, 5, 6, 7, 0, -1} {
			c.Note("after compact 4: rev %d", rev)
			c.Get("", clientv3.WithPrefix(), clientv3.WithRev(rev))
		}
		c.Get("a", clientv3.WithRev(4), clientv3.WithSerializable())
		c.Get("a", clientv3.WithRev(3), clientv3.WithSerializable())
	}},
	{"range/special_keys_and_ends", func(c *C) {
		c.Get("\x00", clientv3.WithRange("\x00")) // empty store
		c.Put("\x00", "zero")                     // 2
		c.Put("a", "1")                           // 3
		c.Put("b", "1")                           // 4
		c.RawRange(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		c.RawRange(&pb.RangeRequest{Key: []byte{0}})
		c.RawRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}})
		c.RawRange(&pb.RangeRequest{Key: []byte("b"), RangeEnd: []byte("a")}) // inverted: empty
		c.RawRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("a")}) // empty
		c.RawRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("a\x00")})
		c.RawRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0, 0}})
		c.RawRange(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte("b")})
		c.RawRange(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte{0}, CountOnly: true})
	}},
	{"range/binary_keys", func(c *C) {
		for _, k := range []string{"a", "a\x00", "a\x00\x00", "a\xff", "a\xff\xff", "a\xff\x00", "b", "\xff", "\xff\xff", "\xff\x00", "\x00a", "\x01"} {
			c.Put(k, fmt.Sprintf("%q", k))
		}
		c.Get("a", clientv3.WithPrefix())
		c.Get("a\xff", clientv3.WithPrefix())
		c.Get("a\x00", clientv3.WithPrefix())
		c.Get("\xff", clientv3.WithPrefix())
		c.Get("\xff\xff", clientv3.WithPrefix())
		c.Get("a\xff", clientv3.WithFromKey())
		c.Get("", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		c.Get("a", clientv3.WithRange("a\xff"))
		c.Delete("a\xff", clientv3.WithPrefix(), clientv3.WithPrevKV())
		c.Get("", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	}},
	{"range/serializable", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("b", "2") // 3
		c.Put("a", "3") // 4
		c.Get("", clientv3.WithPrefix(), clientv3.WithSerializable())
		c.Get("", clientv3.WithPrefix())
		c.Get("a", clientv3.WithSerializable(), clientv3.WithRev(2))
		c.Get("", clientv3.WithPrefix(), clientv3.WithSerializable(), clientv3.WithLimit(1))
		c.Get("a", clientv3.WithSerializable(), clientv3.WithRev(5))
		c.Txn(tx{Then: ops(opGet("a", clientv3.WithSerializable()), opGet("b", clientv3.WithSerializable()))})
		c.Get("", clientv3.WithSerializable())
	}},
	{"range/missing_and_empty", func(c *C) {
		c.Get("missing")
		c.Get("", clientv3.WithPrefix())
		c.Get("", clientv3.WithPrefix(), clientv3.WithCountOnly())
		c.Get("")
		c.RawRange(&pb.RangeRequest{})
		c.RawRange(&pb.RangeRequest{RangeEnd: []byte("z")})
		c.Put("a", "1")
		c.Get("missing", clientv3.WithPrefix())
		c.Get("a", clientv3.WithLimit(1))
	}},

	// ---- DeleteRange ----
	{"delete/prefix_prev_kv", func(c *C) {
		for _, k := range []string{"p/1", "p/2", "p/3", "q"} {
			c.Put(k, k) // 2..5
		}
		c.Delete("p/", clientv3.WithPrefix(), clientv3.WithPrevKV())
		c.Get("", clientv3.WithPrefix())
		c.Delete("p/", clientv3.WithPrefix(), clientv3.WithPrevKV()) // nothing left
		c.Delete("q", clientv3.WithPrevKV())
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(5))
	}},
	{"delete/from_key", func(c *C) {
		for _, k := range []string{"a", "b", "c", "d"} {
			c.Put(k, k) // 2..5
		}
		c.Delete("b", clientv3.WithFromKey())
		c.Get("", clientv3.WithPrefix())
		c.RawDelete(&pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, PrevKv: true})
		c.Get("", clientv3.WithPrefix())
		c.RawDelete(&pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	}},
	{"delete/nothing_no_revision", func(c *C) {
		c.Delete("missing")
		c.Delete("missing", clientv3.WithPrefix(), clientv3.WithPrevKV())
		c.Put("a", "1") // 2
		c.Delete("b")
		c.Delete("a", clientv3.WithRange("a")) // empty range
		c.RawDelete(&pb.DeleteRangeRequest{Key: []byte("b"), RangeEnd: []byte("a")})
		c.Put("c", "1") // 3
		c.Delete("")
		c.RawDelete(&pb.DeleteRangeRequest{RangeEnd: []byte("z")})
		c.Get("", clientv3.WithPrefix())
	}},
	{"delete/recreate", func(c *C) {
		c.Put("a", "1")                        // 2
		c.Put("a", "2")                        // 3
		c.Delete("a", clientv3.WithPrevKV())   // 4
		c.Put("a", "3", clientv3.WithPrevKV()) // 5: version 1, create 5
		c.Put("a", "4")                        // 6
		for _, rev := range []int64{3, 4, 5, 6} {
			c.Note("rev %d", rev)
			c.Get("a", clientv3.WithRev(rev))
		}
		c.Compact(4)
		c.Get("a", clientv3.WithRev(4))
		c.Delete("a")
		c.Delete("a")
		c.Get("a")
	}},

	// ---- Compact ----
	{"compact/twice_and_future", func(c *C) {
		for i := 0; i < 4; i++ {
			c.Put("k", fmt.Sprint(i)) // 2..5
		}
		c.Compact(6)
		c.Compact(3)
		c.Compact(3)
		c.Compact(2)
		c.Compact(5)
		c.Compact(5)
		c.Compact(6)
		c.Get("k", clientv3.WithRev(4))
		c.Get("k", clientv3.WithRev(5))
		c.Put("k", "x") // 6
		c.Compact(6)
		c.Get("k", clientv3.WithRev(6))
	}},
	{"compact/physical_then_ranges", func(c *C) {
		c.Put("a", "1") // 2
		c.Put("b", "1") // 3
		c.Put("a", "2") // 4
		c.Delete("b")   // 5: a tombstone at the compact revision
		c.Put("c", "1") // 6
		c.Put("a", "3") // 7
		c.Compact(5, clientv3.WithCompactPhysical())
		for _, rev := range []int64{4, 5, 6, 7, 8} {
			c.Note("rev %d", rev)
			c.Get("", clientv3.WithPrefix(), clientv3.WithRev(rev))
		}
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(5), clientv3.WithCountOnly())
		c.Get("b")
		c.Put("b", "2", clientv3.WithPrevKV()) // 8: recreated
		c.Get("b")
		c.Compact(7, clientv3.WithCompactPhysical())
		c.Compact(7, clientv3.WithCompactPhysical())
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(7))
		c.Get("", clientv3.WithPrefix(), clientv3.WithRev(6))
	}},
	{"compact/zero_negative_first", func(c *C) {
		// Edge revisions on a fresh store: nothing was compacted yet.
		c.RawCompact(&pb.CompactionRequest{Revision: 1})
		c.RawCompact(&pb.CompactionRequest{Revision: 1})
		c.RawCompact(&pb.CompactionRequest{Revision: 0})
		c.RawCompact(&pb.CompactionRequest{Revision: -1})
		c.Put("a", "1") // 2
		c.RawCompact(&pb.CompactionRequest{Revision: 3})
		c.RawCompact(&pb.CompactionRequest{Revision: 2, Physical: true})
		c.Get("a", clientv3.WithRev(1))
		c.Get("a", clientv3.WithRev(2))
	}},
	{"compact/zero_on_fresh_store", func(c *C) {
		c.RawCompact(&pb.CompactionRequest{Revision: 0})
		c.RawCompact(&pb.CompactionRequest{Revision: 0})
		c.RawCompact(&pb.CompactionRequest{Revision: -5})
		c.Put("a", "1") // 2
		c.Get("a", clientv3.WithRev(1))
	}},

	// ---- Request size ----
	{"size/request_too_large_1_8MiB", func(c *C) {
		// Under gRPC's limit (max-request-bytes + 512 KiB) but over etcd's own.
		big := strings.Repeat("x", 1800*kib)
		c.Put("big", big)
		c.Txn(tx{Then: ops(opPut("big", big))})
		// Many small puts adding up to more than the limit.
		many := make([]clientv3.Op, 80)
		for i := range many {
			many[i] = opPut(fmt.Sprintf("m%02d", i), strings.Repeat("y", 20*kib))
		}
		c.Txn(tx{Then: many})
		c.Get("", clientv3.WithPrefix(), clientv3.WithCountOnly())
	}},
	{"size/grpc_limit_2MiB", func(c *C) {
		// Over gRPC's receive limit: the transport refuses it.
		c.Put("big", strings.Repeat("x", 2*mib))
		c.Get("", clientv3.WithPrefix(), clientv3.WithCountOnly())
	}},
	{"size/just_under_limit", func(c *C) {
		big := strings.Repeat("z", defaultMaxRequestBytes-512)
		c.Put("big", big)
		c.Get("big")
		c.Put("big", "", clientv3.WithIgnoreValue(), clientv3.WithPrevKV())
		c.Get("big", clientv3.WithKeysOnly())
	}},
}
