package etcd3

// The same conformance tests through the watch cache (cacher.Cacher behind a
// cacher.CacheDelegator, on top of the etcd3 store), which is how
// kube-apiserver serves most resources: LISTs and WATCHes from memory, fed
// by one etcd watch per resource, consistent reads made fresh with
// RequestWatchProgress, bookmarks from progress notifications. Wired as
// upstream's k8s.io/apiserver/pkg/storage/cacher/cacher_test.go
// (testSetupWithEtcdServer), with the embedded etcd replaced by a server
// process; tests that upstream wires through the cacher's unexported fields
// (compactWatch, MarkConsistent) are left out.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/apitesting"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/cacher"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/apiserver/pkg/storage/value/encrypt/identity"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	clientfeatures "k8s.io/client-go/features"
	"k8s.io/client-go/tools/cache"
	featuregatetesting "k8s.io/component-base/featuregate/testing"
	"k8s.io/utils/clock"

	"go.etcd.io/etcd/client/v3/kubernetes"
)

// examplev1ProtoCodec is upstream's (cacher_testing_utils_test.go).
var examplev1ProtoCodec runtime.Codec

func init() {
	pb := protobuf.NewSerializer(scheme, scheme)
	examplev1ProtoCodec = codecs.CodecForVersions(pb, pb, schema.GroupVersions{examplev1.SchemeGroupVersion}, nil)
}

// getPodAttrs is upstream's GetPodAttrs (cacher_test.go).
func getPodAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	pod, ok := obj.(*example.Pod)
	if !ok {
		return nil, nil, fmt.Errorf("not a pod")
	}
	f := fields.Set{
		"spec.nodeName":      pod.Spec.NodeName,
		"spec.restartPolicy": string(pod.Spec.RestartPolicy),
		"status.phase":       string(pod.Status.Phase),
		"metadata.name":      pod.Name,
		"metadata.namespace": pod.Namespace,
	}
	return labels.Set(pod.Labels), f, nil
}

type cacherOptions struct {
	resourcePrefix string
	keyFunc        func(runtime.Object) (string, error)
	indexerFuncs   map[string]storage.IndexerFunc
	indexers       cache.Indexers
	codec          runtime.Codec
	transformer    value.Transformer
}

type cacherOption func(*cacherOptions)

func withCacherCodec(c runtime.Codec) cacherOption {
	return func(o *cacherOptions) { o.codec = c }
}

func withCacherTransformer(tr value.Transformer) cacherOption {
	return func(o *cacherOptions) { o.transformer = tr }
}

// withClusterScopedKeyFunc and withNodeNameAndNamespaceIndex are upstream's.
func withClusterScopedKeyFunc(o *cacherOptions) {
	o.keyFunc = func(obj runtime.Object) (string, error) {
		return storage.NoNamespaceKeyFunc(o.resourcePrefix, obj)
	}
}

func withNodeNameAndNamespaceIndex(o *cacherOptions) {
	o.indexerFuncs = map[string]storage.IndexerFunc{
		"spec.nodeName": func(obj runtime.Object) string {
			pod, ok := obj.(*example.Pod)
			if !ok {
				return ""
			}
			return pod.Spec.NodeName
		},
	}
	o.indexers = map[string]cache.IndexFunc{
		"f:spec.nodeName": func(obj interface{}) ([]string, error) {
			return []string{obj.(*example.Pod).Spec.NodeName}, nil
		},
		"f:metadata.namespace": func(obj interface{}) ([]string, error) {
			return []string{obj.(*example.Pod).Namespace}, nil
		},
	}
}

type cacherEnv struct {
	ctx         context.Context
	delegator   *cacher.CacheDelegator
	etcdStore   storage.Interface
	client      *kubernetes.Client
	k8sRecorder *storagetesting.KubernetesRecorder
	// snapshots: ListFromCacheSnapshot was on when the cacher was made,
	// so it runs its own compactor.
	snapshots bool
}

// setupCacher starts a fresh server from bin, an etcd3 store on it (prefix
// /registry, protobuf codec, identity transformer, as upstream) and a
// cacher over it, and waits until the cacher is ready. It also waits until
// the storage layer has decided that the server supports
// RequestWatchProgress (from the version in its Status answer), without
// which consistent reads are not served from the cache.
func setupCacher(t *testing.T, bin string, opts ...cacherOption) *cacherEnv {
	t.Helper()
	prefix := "/pods/"
	o := cacherOptions{
		resourcePrefix: prefix,
		keyFunc:        func(obj runtime.Object) (string, error) { return storage.NamespaceKeyFunc(prefix, obj) },
		codec:          examplev1ProtoCodec,
		transformer:    identity.NewEncryptCheckTransformer(),
	}
	for _, opt := range opts {
		opt(&o)
	}
	resetFeatureSupportCheckerDuringTest(t)
	srv := startServer(t, bin, "--unsafe-no-fsync")
	client, _, k8sRecorder := newRecordedClient(t, srv)

	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	etcdStore, err := etcd3.New(client, compactor, o.codec, newPod, newPodList, "/registry", "/pods/",
		schema.GroupResource{Resource: "pods"}, o.transformer, etcd3.NewDefaultLeaseManagerConfig(),
		etcd3.NewDefaultDecoder(o.codec, versioner), versioner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(etcdStore.Close)

	if err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return etcdfeature.DefaultFeatureSupportChecker.Supports(storage.RequestWatchProgress), nil
	}); err != nil {
		st, serr := client.Status(context.Background(), srv.clientURL)
		version := "?"
		if serr == nil {
			version = st.Version
		}
		t.Fatalf("the storage layer did not find RequestWatchProgress supported within 20s (it needs Status.version >= 3.4.31 and not 3.5.0-3.5.12; the server reports %q, status error %v)", version, serr)
	}

	// Inject one list error to make sure the relist path is taken (as
	// upstream).
	listErrors := 1
	if clientfeatures.FeatureGates().Enabled(clientfeatures.WatchListClient) {
		listErrors = 0
	}
	wrapped := &storagetesting.StorageInjectingListErrors{Interface: etcdStore, Errors: listErrors}
	c, err := cacher.NewCacherFromConfig(cacher.Config{
		Storage:             wrapped,
		Versioner:           versioner,
		GroupResource:       schema.GroupResource{Resource: "pods"},
		EventsHistoryWindow: cacher.DefaultEventFreshDuration,
		ResourcePrefix:      o.resourcePrefix,
		KeyFunc:             o.keyFunc,
		GetAttrsFunc:        getPodAttrs,
		NewFunc:             newPod,
		NewListFunc:         newPodList,
		IndexerFuncs:        o.indexerFuncs,
		Indexers:            &o.indexers,
		Codec:               o.codec,
		Clock:               clock.RealClock{},
	})
	if err != nil {
		t.Fatalf("Failed to initialize cacher: %v", err)
	}
	ctx := context.Background()
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return wrapped.ErrorsConsumed()
	}); err != nil {
		t.Fatalf("Failed to inject list errors: %v", err)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := c.Wait(waitCtx); err != nil {
		t.Fatalf("cacher not ready: %v", err)
	}
	delegator := cacher.NewCacheDelegator(c, wrapped)
	t.Cleanup(func() {
		delegator.Stop()
		c.Stop()
	})
	return &cacherEnv{
		ctx:         ctx,
		delegator:   delegator,
		etcdStore:   etcdStore,
		client:      client,
		k8sRecorder: k8sRecorder,
		snapshots:   utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot),
	}
}

// compactStore is upstream's (cacher_testing_utils_test.go): compact etcd
// and wait for the store to observe it. Upstream then runs the cacher's
// compactor by hand (an unexported field); here the test waits (up to 20s)
// for that compactor's own 15s poll to have dropped the cached snapshots,
// seen as an exact LIST at the compacted revision minus one turning into
// "too old".
func (e *cacherEnv) compactStore() storagetesting.Compaction {
	client := e.client.Client
	return func(ctx context.Context, t *testing.T, resourceVersion string) {
		versioner := storage.APIObjectVersioner{}
		rv, err := versioner.ParseResourceVersion(resourceVersion)
		if err != nil {
			t.Fatal(err)
		}
		var currentVersion int64
		currentVersion, _, _, err = etcd3.Compact(ctx, client, currentVersion, int64(rv))
		if err != nil {
			_, _, _, err = etcd3.Compact(ctx, client, currentVersion, int64(rv))
		}
		if err != nil {
			t.Fatal(err)
		}
		if !e.snapshots {
			return
		}
		deadline := time.Now().Add(30 * time.Second)
		for e.etcdStore.CompactRevision() != int64(rv) {
			if time.Now().After(deadline) {
				t.Fatalf("the store did not observe compaction at %d within 30s (CompactRevision()=%d)", rv, e.etcdStore.CompactRevision())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if rv <= 1 {
			return
		}
		deadline = time.Now().Add(20 * time.Second)
		for {
			err := e.delegator.GetList(ctx, "/pods/", storage.ListOptions{
				Predicate:            storage.Everything,
				Recursive:            true,
				ResourceVersion:      fmt.Sprint(rv - 1),
				ResourceVersionMatch: metav1.ResourceVersionMatchExact,
			}, &example.PodList{})
			if err != nil && strings.Contains(err.Error(), "too old") {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the cacher still serves revision %d 20s after compaction at %d (error %v)", rv-1, rv, err)
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
}

func (e *cacherEnv) increaseRVFunc() storagetesting.IncreaseRVFunc {
	client := e.client.Client
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("Could not update increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

// createWrapper is upstream's: Create, then wait until the cache serves
// the created object.
type createWrapper struct {
	*cacher.CacheDelegator
}

func (c *createWrapper) Create(ctx context.Context, key string, obj, out runtime.Object, ttl uint64) error {
	if err := c.CacheDelegator.Create(ctx, key, obj, out, ttl); err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, wait.ForeverTestTimeout, true, func(ctx context.Context) (bool, error) {
		currentObj := newPod()
		err := c.CacheDelegator.Get(ctx, key, storage.GetOptions{ResourceVersion: "0"}, currentObj)
		if err != nil {
			if storage.IsNotFound(err) {
				return false, nil
			}
			return false, err
		}
		return apiequality.Semantic.DeepEqual(currentObj, out), nil
	})
}

func noStorageInvariants(context.Context, *testing.T, string) {}

func noStorageCalls(*testing.T, uint64, uint64) {}

func cacherCases() []testCase {
	unsafeDelete := func(t *testing.T) {
		featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.AllowUnsafeMalformedObjectDeletion, true)
	}
	simple := func(name string, fn func(ctx context.Context, t *testing.T, s storage.Interface), opts ...cacherOption) testCase {
		return testCase{name, func(t *testing.T, bin string) {
			e := setupCacher(t, bin, opts...)
			fn(e.ctx, t, e.delegator)
		}}
	}
	snapshotModes := func(fn func(t *testing.T, bin string)) func(t *testing.T, bin string) {
		return func(t *testing.T, bin string) {
			for _, on := range []bool{true, false} {
				t.Run(fmt.Sprintf("ListFromCacheSnapshot=%v", on), func(t *testing.T) {
					featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, on)
					fn(t, bin)
				})
			}
		}
	}
	return []testCase{
		simple("Create", func(ctx context.Context, t *testing.T, s storage.Interface) {
			storagetesting.RunTestCreate(ctx, t, s, noStorageInvariants)
		}),
		simple("CreateWithTTL", storagetesting.RunTestCreateWithTTL),
		simple("CreateWithKeyExist", storagetesting.RunTestCreateWithKeyExist),
		simple("Get", storagetesting.RunTestGet),
		simple("UnconditionalDelete", storagetesting.RunTestUnconditionalDelete),
		simple("ConditionalDelete", storagetesting.RunTestConditionalDelete),
		simple("DeleteWithSuggestion", storagetesting.RunTestDeleteWithSuggestion),
		simple("DeleteWithSuggestionAndConflict", storagetesting.RunTestDeleteWithSuggestionAndConflict),
		simple("DeleteWithSuggestionOfDeletedObject", storagetesting.RunTestDeleteWithSuggestionOfDeletedObject),
		simple("ValidateDeletionWithSuggestion", storagetesting.RunTestValidateDeletionWithSuggestion),
		simple("ValidateDeletionWithOnlySuggestionValid", storagetesting.RunTestValidateDeletionWithOnlySuggestionValid),
		simple("DeleteWithConflict", storagetesting.RunTestDeleteWithConflict),
		{"DeleteWithConflictAndMissingExpectedTransformOrDecodeError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			tr := &failingTransformer{Transformer: identity.NewEncryptCheckTransformer()}
			e := setupCacher(t, bin, withCacherTransformer(tr))
			storagetesting.RunTestDeleteWithConflictAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.delegator, tr.setFailing)
		}},
		{"DeleteWithConflictAndExpectedTransformError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			tr := &failingTransformer{Transformer: identity.NewEncryptCheckTransformer()}
			e := setupCacher(t, bin, withCacherTransformer(tr))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.delegator, tr.setFailing)
		}},
		{"DeleteWithConflictAndExpectedDecodeError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			// As upstream: the cache's watch must not panic on the
			// deliberately undecodable object.
			etcd3.TestOnlySetFatalOnDecodeError(t, false)
			codec := &failingCodec{Codec: apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion)}
			e := setupCacher(t, bin, withCacherCodec(codec))
			storagetesting.RunTestDeleteExpectedTransformOrDecodeError(e.ctx, t, e.delegator, codec.setFailing)
		}},
		{"DeleteWithSuggestionAndMissingExpectedTransformOrDecodeError", func(t *testing.T, bin string) {
			unsafeDelete(t)
			e := setupCacher(t, bin)
			storagetesting.RunTestDeleteWithSuggestionAndMissingExpectedTransformOrDecodeError(e.ctx, t, e.delegator)
		}},
		simple("PreconditionalDeleteWithSuggestion", storagetesting.RunTestPreconditionalDeleteWithSuggestion),
		simple("PreconditionalDeleteWithSuggestionPass", storagetesting.RunTestPreconditionalDeleteWithOnlySuggestionPass),
		simple("ListPaging", storagetesting.RunTestListPaging),
		{"List", snapshotModes(func(t *testing.T, bin string) {
			e := setupCacher(t, bin)
			storagetesting.RunTestList(e.ctx, t, e.delegator, e.compactStore(), true, e.k8sRecorder)
		})},
		{"ConsistentList", snapshotModes(func(t *testing.T, bin string) {
			e := setupCacher(t, bin)
			storagetesting.RunTestConsistentList(e.ctx, t, e.delegator, e.increaseRVFunc(), true, true, e.snapshots)
		})},
		// Not upstream: ConsistentList again with
		// ConsistentListFromCacheSkipTimeoutFallback on, so that a cache that
		// cannot catch up (RequestWatchProgress answered late, wrongly or
		// not at all) fails with 429 instead of silently reading etcd.
		{"ConsistentListNoEtcdFallback", snapshotModes(func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ConsistentListFromCacheSkipTimeoutFallback, true)
			e := setupCacher(t, bin)
			storagetesting.RunTestConsistentList(e.ctx, t, e.delegator, e.increaseRVFunc(), true, true, e.snapshots)
		})},
		{"GetListNonRecursive", snapshotModes(func(t *testing.T, bin string) {
			e := setupCacher(t, bin)
			storagetesting.RunTestGetListNonRecursive(e.ctx, t, e.increaseRVFunc(), e.delegator)
		})},
		{"CompactRevision", func(t *testing.T, bin string) {
			featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.ListFromCacheSnapshot, true)
			e := setupCacher(t, bin)
			storagetesting.RunTestCompactRevision(e.ctx, t, e.delegator, e.increaseRVFunc(), e.compactStore())
		}},
		simple("GetListRecursivePrefix", storagetesting.RunTestGetListRecursivePrefix),
		simple("ListContinuation", func(ctx context.Context, t *testing.T, s storage.Interface) {
			storagetesting.RunTestListContinuation(ctx, t, s, noStorageCalls)
		}),
		simple("ListPaginationRareObject", func(ctx context.Context, t *testing.T, s storage.Interface) {
			storagetesting.RunTestListPaginationRareObject(ctx, t, s, noStorageCalls)
		}),
		simple("ListContinuationWithFilter", func(ctx context.Context, t *testing.T, s storage.Interface) {
			storagetesting.RunTestListContinuationWithFilter(ctx, t, s, noStorageCalls)
		}),
		simple("NamespaceScopedList", storagetesting.RunTestNamespaceScopedList, withNodeNameAndNamespaceIndex),
		simple("GuaranteedUpdateWithTTL", storagetesting.RunTestGuaranteedUpdateWithTTL),
		simple("GuaranteedUpdateWithConflict", storagetesting.RunTestGuaranteedUpdateWithConflict),
		simple("GuaranteedUpdateWithSuggestionAndConflict", storagetesting.RunTestGuaranteedUpdateWithSuggestionAndConflict),
		{"Stats", func(t *testing.T, bin string) {
			for _, sizeBased := range []bool{true, false} {
				t.Run(fmt.Sprintf("SizeBasedListCostEstimate=%v", sizeBased), func(t *testing.T) {
					featuregatetesting.SetFeatureGateDuringTest(t, utilfeature.DefaultFeatureGate, features.SizeBasedListCostEstimate, sizeBased)
					e := setupCacher(t, bin)
					storagetesting.RunTestStats(e.ctx, t, e.delegator, examplev1ProtoCodec, identity.NewEncryptCheckTransformer(), sizeBased)
				})
			}
		}},
		simple("KeySchema", storagetesting.RunTestKeySchema),
		simple("Watch", storagetesting.RunTestWatch),
		simple("DeleteTriggerWatch", storagetesting.RunTestDeleteTriggerWatch),
		simple("WatchFromNonZero", storagetesting.RunTestWatchFromNonZero),
		simple("DelayedWatchDelivery", storagetesting.RunTestDelayedWatchDelivery),
		simple("WatcherTimeout", storagetesting.RunTestWatcherTimeout),
		simple("WatchDeleteEventObjectHaveLatestRV", storagetesting.RunTestWatchDeleteEventObjectHaveLatestRV),
		simple("WatchInitializationSignal", storagetesting.RunTestWatchInitializationSignal),
		simple("ClusterScopedWatch", storagetesting.RunTestClusterScopedWatch, withClusterScopedKeyFunc, withNodeNameAndNamespaceIndex),
		simple("NamespaceScopedWatch", storagetesting.RunTestNamespaceScopedWatch, withNodeNameAndNamespaceIndex),
		simple("WatchDispatchBookmarkEvents", func(ctx context.Context, t *testing.T, s storage.Interface) {
			storagetesting.RunTestWatchDispatchBookmarkEvents(ctx, t, s, true)
		}),
		simple("WatchBookmarksWithCorrectResourceVersion", storagetesting.RunTestOptionalWatchBookmarksWithCorrectResourceVersion),
		simple("SendInitialEventsBackwardCompatibility", storagetesting.RunSendInitialEventsBackwardCompatibility),
		{"WatchSemantics", func(t *testing.T, bin string) {
			e := setupCacher(t, bin)
			storagetesting.RunWatchSemantics(context.TODO(), t, &createWrapper{e.delegator})
		}},
		{"WatchSemanticInitialEventsExtended", func(t *testing.T, bin string) {
			e := setupCacher(t, bin)
			storagetesting.RunWatchSemanticInitialEventsExtended(context.TODO(), t, &createWrapper{e.delegator})
		}},
		{"WatchListMatchSingle", func(t *testing.T, bin string) {
			e := setupCacher(t, bin)
			storagetesting.RunWatchListMatchSingle(context.TODO(), t, &createWrapper{e.delegator})
		}},
	}
}
