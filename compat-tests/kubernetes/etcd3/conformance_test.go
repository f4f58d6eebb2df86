package etcd3

// The exported storage conformance tests of k8s.io/apiserver
// (k8s.io/apiserver/pkg/storage/testing, RunTest*/Run*) against the etcd3
// store, wired as upstream's etcd3/store_test.go and etcd3/watcher_test.go
// wire them, plus a few of upstream's etcd3-specific tests that need only
// the store's exported API. Every case starts a fresh server, as upstream
// starts a fresh embedded etcd per test.
//
// TestRsetcd runs them against $RSETCD_BIN, TestReferenceEtcd against the
// reference etcd ($REF_ETCD_BIN or <repo>/.cache/reference/bin/etcd).

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"k8s.io/apimachinery/pkg/api/apitesting"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/ptr"
)

func TestRsetcd(t *testing.T) {
	runSuite(t, binFromEnv(t))
}

func TestReferenceEtcd(t *testing.T) {
	runSuite(t, refBin(t))
}

type testCase struct {
	name string
	run  func(t *testing.T, bin string)
}

func runSuite(t *testing.T, bin string) {
	t.Logf("server: %s", bin)
	for _, group := range []struct {
		name  string
		cases []testCase
	}{
		{"Store", storeCases()},
		{"Watch", watchCases()},
		{"Etcd3", append(etcd3Cases(), compactCases()...)},
		{"Cacher", cacherCases()},
	} {
		t.Run(group.name, func(t *testing.T) {
			for _, tc := range group.cases {
				t.Run(tc.name, func(t *testing.T) { tc.run(t, bin) })
			}
		})
	}
}

// rangeStreamModes runs fn with the EtcdRangeStream gate off and on (as
// upstream). On: the store first tries etcd 3.7's KV.RangeStream, which an
// etcd 3.6 server (and rsetcd) must refuse with codes.Unimplemented, after
// which it marks the feature unsupported and falls back to paginated
// Range; upstream's extra assertion that lists were streamed needs a 3.7
// server and is not made here.
func rangeStreamModes(fn func(t *testing.T, bin string)) func(t *testing.T, bin string) {
	return func(t *testing.T, bin string) {
		for _, rangeStream := range []bool{false, true} {
			t.Run(fmt.Sprintf("rangeStream=%v", rangeStream), func(t *testing.T) {
				featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.EtcdRangeStream, rangeStream)
				resetFeatureSupportCheckerDuringTest(t)
				if rangeStream {
					// A cleanup runs after parallel subtests too.
					t.Cleanup(func() {
						if etcdfeature.DefaultFeatureSupportChecker.Supports(storage.RangeStream) {
							t.Logf("RangeStream: not marked unsupported (served by the server, or not tried)")
						} else {
							t.Logf("RangeStream: the server answered Unimplemented; the store fell back to paginated Range")
						}
					})
				}
				fn(t, bin)
			})
		}
	}
}

func storeCases() []testCase {
	unsafeDelete := func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
	}
	return []testCase{
		{"Create", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestCreate(e.ctx, t, e.store, e.checkStorageInvariants())
		}},
		{"CreateWithTTL", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestCreateWithTTL(e.ctx, t, e.store)
		}},
		{"CreateWithKeyExist", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestCreateWithKeyExist(e.ctx, t, e.store)
		}},
		{"Get", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGet(e.ctx, t, e.store)
		}},
		{"UnconditionalDelete", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestUnconditionalDelete(e.ctx, t, e.store)
		}},
		{"ConditionalDelete", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestConditionalDelete(e.ctx, t, e.store)
		}},
		{"DeleteWithSuggestion", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestDeleteWithSuggestion(e.ctx, t, e.store)
		}},
		{"DeleteWithSuggestionAndConflict", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestDeleteWithSuggestionAndConflict(e.ctx, t, e.store)
		}},
		{"DeleteWithSuggestionOfDeletedObject", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestDeleteWithSuggestionOfDeletedObject(e.ctx, t, e.store)
		}},
		{"ValidateDeletionWithSuggestion", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestValidateDeletionWithSuggestion(e.ctx, t, e.store)
		}},
		{"ValidateDeletionWithOnlySuggestionValid", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestValidateDeletionWithOnlySuggestionValid(e.ctx, t, e.store)
		}},
		{"DeleteWithConflict", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestDeleteWithConflict(e.ctx, t, e.store)
		}},
		{"DeleteWithConflictAndMissingExpectedTransformOrDecodeError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			codec := &failingCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
			e := setup(t, bin, withCodec(codec))
			storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.store, codec.setFailing)
		}},
		{"DeleteWithConflictAndExpectedTransformError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			tr := &failingTransformer{Transformer: newTestTransformer()}
			e := setup(t, bin, withTransformer(tr))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.store, tr.setFailing)
		}},
		{"DeleteWithConflictAndExpectedDecodeError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			codec := &failingCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
			e := setup(t, bin, withCodec(codec))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.store, codec.setFailing)
		}},
		{"DeleteWithSuggestionAndMissingExpectedTransformOrDecodeFailure", func(t *testing.T, bin string) {
			unsafeDelete(t)
			e := setup(t, bin)
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.store)
		}},
		{"PreconditionalDeleteWithSuggestion", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestPreconditionalDeleteWithSuggestion(e.ctx, t, e.store)
		}},
		{"PreconditionalDeleteWithSuggestionPass", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass(e.ctx, t, e.store)
		}},
		{"ListPaging", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestListPaging(e.ctx, t, e.store)
		}},
		{"GetListNonRecursive", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGetListNonRecursive(e.ctx, t, e.increaseRVFunc(), e.store)
		}},
		{"GetListRecursivePrefix", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGetListRecursivePrefix(e.ctx, t, e.store)
		}},
		{"KeySchema", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestKeySchema(e.ctx, t, e.store)
		}},
		{"GetListWithErrorAggregation", func(t *testing.T, bin string) {
			unsafeDelete(t)
			e := setup(t, bin)
			s := etcd3.NewStoreWithUnsafeCorruptObjectDeletion(e.store, schema.GroupResource{Resource: "pods"})
			storagetesting.RunTestGetListWithErrorAggregation(e.ctx, t, e.withTransformerOverride(s), corruptObjectError())
		}},
		{"GetListWithoutErrorAggregation", func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, false)
			e := setup(t, bin)
			storagetesting.RunTestGetListWithoutErrorAggregation(e.ctx, t, e.withTransformerOverride(e.store), corruptObjectError())
		}},
		{"GuaranteedUpdate", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGuaranteedUpdate(e.ctx, t, e.withPrefixTransformer(), e.checkStorageInvariants())
		}},
		{"GuaranteedUpdateWithTTL", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGuaranteedUpdateWithTTL(e.ctx, t, e.store)
		}},
		{"GuaranteedUpdateChecksStoredData", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGuaranteedUpdateChecksStoredData(e.ctx, t, e.withPrefixTransformer())
		}},
		{"GuaranteedUpdateWithConflict", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGuaranteedUpdateWithConflict(e.ctx, t, e.store)
		}},
		{"GuaranteedUpdateWithSuggestionAndConflict", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict(e.ctx, t, e.store)
		}},
		{"TransformationFailure", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestTransformationFailure(e.ctx, t, e.withPrefixTransformer())
		}},
		{"List", rangeStreamModes(func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestList(e.ctx, t, e.store, e.compactStorage(), false, e.k8sRecorder)
		})},
		{"ConsistentList", rangeStreamModes(func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestConsistentList(e.ctx, t, e.store, e.increaseRVFunc(), false, true, false)
		})},
		{"CompactRevision", func(t *testing.T, bin string) {
			// Needs the store to watch the compact key, which
			// ListFromCacheSnapshot turns on (as upstream).
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
			e := setup(t, bin)
			storagetesting.RunTestCompactRevision(e.ctx, t, e.store, e.increaseRVFunc(), e.compactStorage())
		}},
		{"ListContinuation", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestListContinuation(e.ctx, t, e.store, e.checkStorageCallsInvariants())
		}},
		{"ListPaginationRareObject", func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, false)
			e := setup(t, bin)
			storagetesting.RunTestListPaginationRareObject(e.ctx, t, e.store, e.checkStorageCallsInvariants())
		}},
		{"ListContinuationWithFilter", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestListContinuationWithFilter(e.ctx, t, e.store, e.checkStorageCallsInvariants())
		}},
		{"NamespaceScopedList", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestNamespaceScopedList(e.ctx, t, e.store)
		}},
		{"ListInconsistentContinuation", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestListInconsistentContinuation(e.ctx, t, e.store, e.compactStorage())
		}},
		{"ListResourceVersionMatch", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestListResourceVersionMatch(e.ctx, t, e.withPrefixTransformer())
		}},
		{"Stats", func(t *testing.T, bin string) {
			for _, sizeBased := range []bool{true, false} {
				t.Run(fmt.Sprintf("SizeBasedListCostEstimate=%v", sizeBased), func(t *testing.T) {
					e := setup(t, bin)
					if sizeBased {
						if err := e.store.EnableResourceSizeEstimation(e.getKeys); err != nil {
							t.Fatal(err)
						}
					}
					storagetesting.RunTestStats(e.ctx, t, e.store, e.codec, e.transformer, sizeBased)
				})
			}
		}},
	}
}

func watchCases() []testCase {
	progressArgs := withServerArgs("--watch-progress-notify-interval=1s")
	return []testCase{
		{"Watch", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatch(e.ctx, t, e.store)
		}},
		{"ClusterScopedWatch", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestClusterScopedWatch(e.ctx, t, e.store)
		}},
		{"NamespaceScopedWatch", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestNamespaceScopedWatch(e.ctx, t, e.store)
		}},
		{"DeleteTriggerWatch", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestDeleteTriggerWatch(e.ctx, t, e.store)
		}},
		{"WatchFromZero", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatchFromZero(e.ctx, t, e.store, e.compactStorage())
		}},
		{"WatchFromNonZero", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatchFromNonZero(e.ctx, t, e.store)
		}},
		{"DelayedWatchDelivery", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestDelayedWatchDelivery(e.ctx, t, e.store)
		}},
		{"WatchError", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatchError(e.ctx, t, e.withPrefixTransformer())
		}},
		{"WatchContextCancel", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatchContextCancel(e.ctx, t, e.store)
		}},
		{"WatcherTimeout", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatcherTimeout(e.ctx, t, e.store)
		}},
		{"WatchDeleteEventObjectHaveLatestRV", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV(e.ctx, t, e.store)
		}},
		{"WatchInitializationSignal", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunTestWatchInitializationSignal(e.ctx, t, e.store)
		}},
		{"ProgressNotify", func(t *testing.T, bin string) {
			e := setup(t, bin, progressArgs)
			storagetesting.RunOptionalTestProgressNotify(e.ctx, t, e.store, e.increaseRVFunc())
		}},
		{"WatchWithUnsafeDelete", func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
			e := setup(t, bin)
			storagetesting.RunTestWatchWithUnsafeDelete(e.ctx, t, e.withTransformerOverride(e.store), corruptObjectError())
		}},
		{"WatchDispatchBookmarkEvents", func(t *testing.T, bin string) {
			e := setup(t, bin, progressArgs)
			storagetesting.RunTestWatchDispatchBookmarkEvents(e.ctx, t, e.store, false)
		}},
		{"SendInitialEventsBackwardCompatibility", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunSendInitialEventsBackwardCompatibility(e.ctx, t, e.store)
		}},
		{"WatchSemantics", rangeStreamModes(func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunWatchSemantics(e.ctx, t, e.store)
		})},
		{"WatchSemanticsWithConcurrentDecode", rangeStreamModes(func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ConcurrentWatchObjectDecode, true)
			e := setup(t, bin)
			storagetesting.RunWatchSemantics(e.ctx, t, e.store)
		})},
		{"WatchSemanticInitialEventsExtended", rangeStreamModes(func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunWatchSemanticInitialEventsExtended(e.ctx, t, e.store)
		})},
		{"WatchListMatchSingle", rangeStreamModes(func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunWatchListMatchSingle(e.ctx, t, e.store)
		})},
		{"WatchErrorEventIsBlockingFurtherEvent", func(t *testing.T, bin string) {
			e := setup(t, bin)
			storagetesting.RunWatchErrorIsBlockingFurtherEvents(e.ctx, t, e.withPrefixTransformer())
		}},
	}
}

// etcd3Cases are upstream etcd3 package tests (not in the exported
// conformance suite) that only need the store's exported API.
func etcd3Cases() []testCase {
	return []testCase{
		// etcd3/linearized_read_test.go: linearizable Gets do not move the
		// revision a List reports.
		{"LinearizedReadRevisionInvariant", func(t *testing.T, bin string) {
			e := setup(t, bin)
			ctx, store := e.ctx, e.store
			dir := "/pods/"
			key := dir + "/testkey"
			out := &example.Pod{}
			obj := &example.Pod{ObjectMeta: metav1.ObjectMeta{Name: "foo", SelfLink: "testlink"}}
			if err := store.Create(ctx, key, obj, out, 0); err != nil {
				t.Fatalf("Set failed: %v", err)
			}
			originalRevision := out.ResourceVersion
			for range 5 {
				if _, err := e.client.KV.Get(ctx, key); err != nil {
					t.Fatalf("failed to get key: %v", err)
				}
			}
			list := &example.PodList{}
			if err := store.GetList(ctx, dir, storage.ListOptions{Predicate: storage.Everything, Recursive: true}, list); err != nil {
				t.Errorf("Unexpected List error: %v", err)
			}
			if originalRevision != list.ResourceVersion {
				t.Fatalf("original revision (%s) did not match final revision after linearized reads (%s)", originalRevision, list.ResourceVersion)
			}
		}},
		// etcd3/store_test.go TestGetCurrentResourceVersion.
		{"GetCurrentResourceVersion", func(t *testing.T, bin string) {
			e := setup(t, bin)
			ctx, store := e.ctx, e.store
			versioner := store.Versioner()
			pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pod-1"}}
			created := &example.Pod{}
			require.NoError(t, store.Create(ctx, "/pods/ns/pod-1", pod, created, 0))
			currentStorageRV, err := store.GetCurrentResourceVersion(ctx)
			require.NoError(t, err)
			podRV, err := versioner.ParseResourceVersion(created.ResourceVersion)
			require.NoError(t, err)
			require.Equal(t, currentStorageRV, podRV, "expected the global etcd RV to be equal to pod's RV")

			resp, err := e.client.KV.Put(ctx, "compact_rev_key", created.ResourceVersion)
			require.NoError(t, err)
			currentStorageRV, err = store.GetCurrentResourceVersion(ctx)
			require.NoError(t, err)
			require.Equal(t, currentStorageRV, uint64(resp.Header.Revision), "expected the global etcd RV to be equal to replicaset's RV")

			current := &example.Pod{}
			require.NoError(t, store.Get(ctx, "/pods/ns/pod-1", storage.GetOptions{}, current))
			currentPodRV, err := versioner.ParseResourceVersion(current.ResourceVersion)
			require.NoError(t, err)
			require.Equal(t, currentPodRV, podRV, "didn't expect to see the pod's RV changed")
		}},
		// etcd3/watcher_test.go TestTooLargeResourceVersionErrorForWatchList,
		// through store.Watch: a watch-list from a revision the server
		// does not have yet ends in a "Too large resource version" error
		// event with a retry delay.
		{"TooLargeResourceVersionErrorForWatchList", func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.WatchList, true)
			e := setup(t, bin)
			ctx, cancel := context.WithCancel(e.ctx)
			defer cancel()
			requestOpts := storage.ListOptions{
				ResourceVersion:   "102",
				SendInitialEvents: ptr.To(true),
				Recursive:         true,
				Predicate: storage.SelectionPredicate{
					Field:               fields.Everything(),
					Label:               labels.Everything(),
					AllowWatchBookmarks: true,
				},
			}
			var expectedErr *apierrors.StatusError
			if !errors.As(storage.NewTooLargeResourceVersionError(uint64(102), 1, 0), &expectedErr) {
				t.Fatalf("Unable to convert NewTooLargeResourceVersionError to apierrors.StatusError")
			}
			w, err := e.store.Watch(ctx, "/pods/abc/", requestOpts)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Stop()
			actualEvent := <-w.ResultChan()
			if actualEvent.Type != watch.Error {
				t.Fatalf("Unexpected type of the event: %v, expected: %v", actualEvent.Type, watch.Error)
			}
			actualErr, ok := actualEvent.Object.(*metav1.Status)
			if !ok {
				t.Fatalf("Expected *apierrors.StatusError, got: %#v", actualEvent.Object)
			}
			if actualErr.Details.RetryAfterSeconds <= 0 {
				t.Fatalf("RetryAfterSeconds must be > 0, actual value: %v", actualErr.Details.RetryAfterSeconds)
			}
			expectedErr.ErrStatus.Details = actualErr.Details
			if diff := cmp.Diff(*actualErr, expectedErr.ErrStatus); diff != "" {
				t.Fatalf("Unexpected error returned, diff: %v", diff)
			}
		}},
		// The store's RequestWatchProgress (what the watch cache uses for
		// consistent reads) on a running watch: etcd answers with a
		// progress notification, which the store turns into a bookmark
		// at the current revision.
		{"RequestWatchProgress", func(t *testing.T, bin string) {
			e := setup(t, bin)
			ctx, cancel := context.WithCancel(e.ctx)
			defer cancel()
			requestWatchProgress(ctx, t, e)
		}},
	}
}

// requestWatchProgress: a watch on /pods/ from the current revision, an
// unrelated write elsewhere, then store.RequestWatchProgress; the watch must
// deliver a Bookmark at the revision of that write (the server's progress
// notification carries its current revision), and no other event.
func requestWatchProgress(ctx context.Context, t *testing.T, e *testEnv) {
	pod := &example.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "pod-1"}}
	created := &example.Pod{}
	require.NoError(t, e.store.Create(ctx, "/pods/ns/pod-1", pod, created, 0))
	w, err := e.store.Watch(ctx, "/pods/", storage.ListOptions{
		ResourceVersion: created.ResourceVersion,
		Recursive:       true,
		ProgressNotify:  true,
		Predicate: storage.SelectionPredicate{
			Label:               labels.Everything(),
			Field:               fields.Everything(),
			AllowWatchBookmarks: true,
		},
	})
	require.NoError(t, err)
	defer w.Stop()
	rev := e.increaseRVFunc()(ctx, t)
	want := fmt.Sprint(rev)
	// The watch may not be established on the server yet when the first
	// request goes out (etcd then answers nothing); ask again until the
	// bookmark comes.
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	if err := e.store.RequestWatchProgress(ctx); err != nil {
		t.Fatalf("RequestWatchProgress: %v", err)
	}
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("watch closed before a bookmark at %s", want)
			}
			if ev.Type != watch.Bookmark {
				t.Fatalf("unexpected %s event before the bookmark: %#v", ev.Type, ev.Object)
			}
			got, err := meta.Accessor(ev.Object)
			require.NoError(t, err)
			if got.GetResourceVersion() == want {
				return
			}
			t.Logf("bookmark at %s, waiting for %s", got.GetResourceVersion(), want)
		case <-tick.C:
			if err := e.store.RequestWatchProgress(ctx); err != nil {
				t.Fatalf("RequestWatchProgress: %v", err)
			}
		case <-deadline:
			t.Fatalf("no bookmark at resourceVersion %s within 10s of RequestWatchProgress", want)
		}
	}
}
