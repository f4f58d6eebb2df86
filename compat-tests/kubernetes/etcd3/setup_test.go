package etcd3

// The store under test, wired as upstream's
// k8s.io/apiserver/pkg/storage/etcd3/store_test.go (testSetup) wires it, with
// its embedded etcd (etcd3/testserver.RunEtcd) replaced by a server process
// started from a binary, and the store's unexported fields (transformer,
// codec, getKeys) replaced by values this package keeps itself.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/kubernetes"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/grpclog"

	"k8s.io/apimachinery/pkg/api/apitesting"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/apis/example"
	examplev1 "k8s.io/apiserver/pkg/apis/example/v1"
	"k8s.io/apiserver/pkg/features"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/etcd3"
	etcdfeature "k8s.io/apiserver/pkg/storage/feature"
	storagetesting "k8s.io/apiserver/pkg/storage/testing"
	"k8s.io/apiserver/pkg/storage/value"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/utils/clock"
)

var (
	scheme = runtime.NewScheme()
	codecs = serializer.NewCodecFactory(scheme)
)

// defaultTestPrefix is the prefix the test transformer puts before every
// stored value (as upstream).
const defaultTestPrefix = "test!"

func init() {
	metav1.AddToGroupVersion(scheme, metav1.SchemeGroupVersion)
	utilruntime.Must(example.AddToScheme(scheme))
	utilruntime.Must(examplev1.AddToScheme(scheme))
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
}

func newPod() runtime.Object     { return &example.Pod{} }
func newPodList() runtime.Object { return &example.PodList{} }

// swappableTransformer delegates to a transformer that tests may replace
// while the store runs. Upstream replaces the store's (and its watcher's)
// unexported transformer field; giving the store this indirection instead
// has the same effect through etcd3.New's public signature.
type swappableTransformer struct {
	mu    sync.RWMutex
	inner value.Transformer
}

func (s *swappableTransformer) get() value.Transformer {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.inner
}

func (s *swappableTransformer) set(t value.Transformer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inner = t
}

func (s *swappableTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	return s.get().TransformFromStorage(ctx, data, dataCtx)
}

func (s *swappableTransformer) TransformToStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, error) {
	return s.get().TransformToStorage(ctx, data, dataCtx)
}

// testEnv is what setup returns: the store and what upstream's tests reach
// through its unexported fields.
type testEnv struct {
	ctx    context.Context
	store  storage.Interface
	client *kubernetes.Client
	codec  runtime.Codec
	// transformer is the store's (and watcher's) transformer.
	transformer *swappableTransformer
	// prefixTransformer is the default transformer (nil when a test gave
	// its own).
	prefixTransformer *storagetesting.PrefixTransformer
	kvRecorder        *storagetesting.KVRecorder
	k8sRecorder       *storagetesting.KubernetesRecorder
	server            *serverProc
	resourcePrefix    string
	pathPrefix        string
}

type setupOptions struct {
	serverArgs     []string
	codec          runtime.Codec
	prefix         string
	resourcePrefix string
	transformer    value.Transformer
	leaseConfig    etcd3.LeaseManagerConfig
}

type setupOption func(*setupOptions)

// withServerArgs passes extra flags to the server (e.g.
// --watch-progress-notify-interval=1s, upstream's
// WatchProgressNotifyInterval in the embedded server's config).
func withServerArgs(args ...string) setupOption {
	return func(o *setupOptions) { o.serverArgs = append(o.serverArgs, args...) }
}

func withCodec(c runtime.Codec) setupOption { return func(o *setupOptions) { o.codec = c } }

func withTransformer(tr value.Transformer) setupOption {
	return func(o *setupOptions) { o.transformer = tr }
}

func withPrefix(p string) setupOption { return func(o *setupOptions) { o.prefix = p } }

func withResourcePrefix(p string) setupOption {
	return func(o *setupOptions) { o.resourcePrefix = p }
}

func newTestTransformer() *storagetesting.PrefixTransformer {
	return storagetesting.NewPrefixTransformer([]byte(defaultTestPrefix), false)
}

// setup starts a fresh server from bin and returns an etcd3 store on it, as
// upstream's testSetup does with a fresh embedded etcd per test.
func setup(t *testing.T, bin string, opts ...setupOption) *testEnv {
	t.Helper()
	o := setupOptions{
		codec:          apitesting.TestCodec(codecs, examplev1.SchemeGroupVersion),
		resourcePrefix: "/pods/",
		leaseConfig:    etcd3.NewDefaultLeaseManagerConfig(),
	}
	// As upstream's newTestLeaseManagerConfig: reuse leases for 1s only.
	o.leaseConfig.ReuseDurationSeconds = 1
	for _, opt := range opts {
		opt(&o)
	}
	// --unsafe-no-fsync as upstream's embedded test server (UnsafeNoFsync).
	srv := startServer(t, bin, append([]string{"--unsafe-no-fsync"}, o.serverArgs...)...)

	client, kvRecorder, k8sRecorder := newRecordedClient(t, srv)

	env := &testEnv{
		ctx:            context.Background(),
		client:         client,
		codec:          o.codec,
		kvRecorder:     kvRecorder,
		k8sRecorder:    k8sRecorder,
		server:         srv,
		resourcePrefix: o.resourcePrefix,
		pathPrefix:     o.prefix,
	}
	inner := o.transformer
	if inner == nil {
		env.prefixTransformer = newTestTransformer()
		inner = env.prefixTransformer
	}
	env.transformer = &swappableTransformer{inner: inner}

	versioner := storage.APIObjectVersioner{}
	compactor := etcd3.NewCompactor(client.Client, 0, clock.RealClock{}, nil)
	t.Cleanup(compactor.Stop)
	s, err := etcd3.New(
		client,
		compactor,
		o.codec,
		newPod,
		newPodList,
		o.prefix,
		o.resourcePrefix,
		schema.GroupResource{Resource: "pods"},
		env.transformer,
		o.leaseConfig,
		etcd3.NewDefaultDecoder(o.codec, versioner),
		versioner,
	)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	env.store = s
	return env
}

// newRecordedClient is testserver.RunEtcd's client: a kubernetes client
// whose KV and Kubernetes interfaces record the calls.
func newRecordedClient(t testing.TB, srv *serverProc) (*kubernetes.Client, *storagetesting.KVRecorder, *storagetesting.KubernetesRecorder) {
	t.Helper()
	client, err := kubernetes.New(clientv3.Config{
		Endpoints:   []string{srv.clientURL},
		DialTimeout: 10 * time.Second,
		Logger:      zaptest.NewLogger(t, zaptest.Level(zapcore.ErrorLevel)).Named("etcd-client"),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	k8sRecorder := storagetesting.NewKubernetesRecorder(client.Kubernetes)
	kvRecorder := storagetesting.NewKVRecorder(client.KV, k8sRecorder)
	client.KV = kvRecorder
	client.Kubernetes = k8sRecorder
	return client, kvRecorder, k8sRecorder
}

// prefixStore is upstream's storeWithPrefixTransformer: the store plus
// UpdatePrefixTransformer, which applies a modifier to a copy of the
// default PrefixTransformer.
type prefixStore struct {
	storage.Interface
	env *testEnv
}

func (e *testEnv) withPrefixTransformer() *prefixStore {
	return &prefixStore{Interface: e.store, env: e}
}

func (s *prefixStore) UpdatePrefixTransformer(modifier storagetesting.PrefixTransformerModifier) func() {
	orig := s.env.transformer.get()
	pt, ok := orig.(*storagetesting.PrefixTransformer)
	if !ok {
		panic(fmt.Sprintf("UpdatePrefixTransformer: the store's transformer is a %T, not a PrefixTransformer", orig))
	}
	cp := *pt
	s.env.transformer.set(modifier(&cp))
	return func() { s.env.transformer.set(orig) }
}

// overrideStore is upstream's storeWithTransformerOverride.
type overrideStore struct {
	storage.Interface
	env *testEnv
}

func (e *testEnv) withTransformerOverride(s storage.Interface) *overrideStore {
	return &overrideStore{Interface: s, env: e}
}

func (s *overrideStore) UpdateTransformer(modifier storagetesting.TransformerModifier) func() {
	orig := s.env.transformer.get()
	s.env.transformer.set(modifier(orig))
	return func() { s.env.transformer.set(orig) }
}

// corruptObjectError returns the storage layer's own (unexported) error for
// an object whose data could not be transformed, wrapping "bits flipped",
// as upstream's &corruptObjectError{err: ..., errType: untransformable}. It
// is obtained from etcd3.WithCorruptObjErrorHandlingTransformer.
func corruptObjectError() error {
	tr := etcd3.WithCorruptObjErrorHandlingTransformer(failWith{errors.New("bits flipped")})
	_, _, err := tr.TransformFromStorage(context.Background(), []byte("x"), value.DefaultContext(nil))
	if err == nil {
		panic("WithCorruptObjErrorHandlingTransformer returned no error")
	}
	return err
}

type failWith struct{ err error }

func (f failWith) TransformFromStorage(context.Context, []byte, value.Context) ([]byte, bool, error) {
	return nil, false, f.err
}

func (f failWith) TransformToStorage(context.Context, []byte, value.Context) ([]byte, error) {
	return nil, f.err
}

// failingTransformer is upstream's testTransformer.
type failingTransformer struct {
	value.Transformer
	fail atomic.Bool
}

func (tt *failingTransformer) setFailing(c bool) { tt.fail.Store(c) }

func (tt *failingTransformer) TransformFromStorage(ctx context.Context, data []byte, dataCtx value.Context) ([]byte, bool, error) {
	if tt.fail.Load() {
		return nil, false, errors.New("synthetic error")
	}
	return tt.Transformer.TransformFromStorage(ctx, data, dataCtx)
}

// failingCodec is upstream's testCodec.
type failingCodec struct {
	runtime.Codec
	fail atomic.Bool
}

func (tc *failingCodec) setFailing(c bool) { tc.fail.Store(c) }

func (tc *failingCodec) Decode(data []byte, defaults *schema.GroupVersionKind, into runtime.Object) (runtime.Object, *schema.GroupVersionKind, error) {
	if tc.fail.Load() {
		return nil, nil, errors.New("synthetic error")
	}
	return tc.Codec.Decode(data, defaults, into)
}

// checkStorageInvariants is upstream's: the stored value, read with a plain
// Get, decodes after the transformer's prefix and has no resourceVersion or
// selfLink.
func (e *testEnv) checkStorageInvariants() storagetesting.KeyValidation {
	return func(ctx context.Context, t *testing.T, key string) {
		getResp, err := e.client.Client.KV.Get(ctx, key)
		if err != nil {
			t.Fatalf("etcdClient.KV.Get failed: %v", err)
		}
		if len(getResp.Kvs) == 0 {
			t.Fatalf("expecting non empty result on key: %s", key)
		}
		decoded, err := runtime.Decode(e.codec, getResp.Kvs[0].Value[len(defaultTestPrefix):])
		if err != nil {
			t.Fatalf("expecting successful decode of object from %v\n%v", err, string(getResp.Kvs[0].Value))
		}
		obj := decoded.(*example.Pod)
		if obj.ResourceVersion != "" {
			t.Errorf("stored object should have empty resource version")
		}
		if obj.SelfLink != "" {
			t.Errorf("stored output should have empty selfLink")
		}
	}
}

// maxLimit is etcd3's page size cap (store.go: maxLimit = 10000).
const maxLimit = 10000

// checkStorageCallsInvariants is upstream's: the number of values the
// transformer read and of KV reads a paginated list made.
func (e *testEnv) checkStorageCallsInvariants() storagetesting.CallsValidation {
	transformer, recorder := e.prefixTransformer, e.kvRecorder
	return func(t *testing.T, pageSize, estimatedProcessedObjects uint64) {
		if reads := transformer.GetReadsAndReset(); reads != estimatedProcessedObjects {
			t.Errorf("unexpected reads: %d, expected: %d", reads, estimatedProcessedObjects)
		}
		estimatedGetCalls := uint64(1)
		if pageSize != 0 {
			currLimit := pageSize
			for sum := uint64(1); sum < estimatedProcessedObjects; {
				currLimit *= 2
				if currLimit > maxLimit {
					currLimit = maxLimit
				}
				sum += currLimit
				estimatedGetCalls++
			}
		}
		if reads := recorder.GetReadsAndReset() + recorder.GetStreamReadsAndReset(); reads != estimatedGetCalls {
			t.Fatalf("unexpected reads: %d, want: %d", reads, estimatedGetCalls)
		}
	}
}

// compactStorage is upstream's: compact through etcd3.Compact (the
// compact_rev_key transaction, retried once on a version conflict), then,
// with ListFromCacheSnapshot on, wait until the store has seen the
// compaction.
func (e *testEnv) compactStorage() storagetesting.Compaction {
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
		if utilfeature.DefaultFeatureGate.Enabled(features.ListFromCacheSnapshot) {
			// Upstream loops on ctx (no deadline in its tests); bound it.
			deadline := time.Now().Add(30 * time.Second)
			for e.store.CompactRevision() != int64(rv) {
				if time.Now().After(deadline) {
					t.Fatalf("the store did not observe compaction at %d within 30s (CompactRevision()=%d)", rv, e.store.CompactRevision())
				}
				select {
				case <-ctx.Done():
					t.Fatal(ctx.Err())
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
	}
}

// increaseRVFunc is upstream's: an unrelated put that moves the revision.
func (e *testEnv) increaseRVFunc() storagetesting.IncreaseRVFunc {
	client := e.client.Client
	return func(ctx context.Context, t *testing.T) int64 {
		resp, err := client.KV.Put(ctx, "increaseRV", "ok")
		if err != nil {
			t.Fatalf("Could not update increaseRV: %v", err)
		}
		return resp.Header.Revision
	}
}

// getKeys is the store's (unexported) getKeys: the keys under the
// resource prefix, keys only.
func (e *testEnv) getKeys(ctx context.Context) ([]string, error) {
	// As etcd3.New and prepareKey build it.
	prefix := path.Join("/", e.pathPrefix)
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	key := prefix + strings.TrimPrefix(e.resourcePrefix, "/")
	resp, err := e.client.KV.Get(ctx, key, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys, nil
}

// resetFeatureSupportCheckerDuringTest is upstream's: a fresh feature
// support checker (RangeStream and RequestWatchProgress support are
// global state).
func resetFeatureSupportCheckerDuringTest(t *testing.T) {
	t.Helper()
	orig := etcdfeature.DefaultFeatureSupportChecker
	etcdfeature.DefaultFeatureSupportChecker = etcdfeature.NewDefaultFeatureSupportChecker()
	t.Cleanup(func() { etcdfeature.DefaultFeatureSupportChecker = orig })
}
