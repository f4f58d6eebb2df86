package kubeapiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

const (
	ns  = "kcompat"
	crd = "widgets.kcompat.rsetcd.io"
	// apiserverReadyTimeout bounds kube-apiserver's start (until /readyz
	// answers ok); it is mostly CPU-bound, tens of seconds on 2 cores.
	apiserverReadyTimeout = 3 * time.Minute
)

// TestKubeAPIServerOnRsetcd runs a real kube-apiserver (k8s.io/kubernetes,
// see build.sh) on a 3-member cluster of $RSETCD_BIN and drives it with a
// real kubectl: namespaces, configmaps, secrets, a deployment, a CRD and its
// custom objects are created, listed, read, updated (patch, apply, replace,
// scale, label) and deleted while `kubectl get --watch` runs for each
// resource; each member in turn (the leader, a follower kube-apiserver is
// talking to, the last one) is killed with SIGKILL while writes go on and
// started again on its data directory. It then checks that every
// watch printed exactly the changes the storage recorded (a watch of the
// cluster's history from revision 1, kube-apiserver's compaction being off),
// including every write kubectl reported, and that the three members hold
// the same data (serializable Get of every key and HashKV at one revision).
func TestKubeAPIServerOnRsetcd(t *testing.T) {
	bin := serverBin(t)
	kubeDir := kubeBins(t)
	testStart := time.Now()
	dir := t.TempDir()
	var ports portPool

	// --- the storage cluster
	c := startCluster(t, &ports, bin, 3)
	t.Logf("3 members of %s ready in %v: %s", bin, time.Since(testStart).Round(time.Millisecond), strings.Join(c.endpoints(), ","))
	cli, err := newClient(c.endpoints()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// --- kube-apiserver
	p := newPKI(t, dir)
	port := ports.next(t)
	api := &proc{
		name:    "kube-apiserver",
		bin:     filepath.Join(kubeDir, "kube-apiserver"),
		logPath: filepath.Join(dir, "kube-apiserver.log"),
		args: []string{
			"--etcd-servers=" + strings.Join(c.endpoints(), ","),
			// Keep the whole history: the test reads it back to compare
			// with what the watches printed.
			"--etcd-compaction-interval=0",
			"--bind-address=127.0.0.1",
			// Only published (the "kubernetes" service's endpoints, kept
			// by the lease reconciler in keys with an etcd lease); the
			// reconciler refuses a loopback address, so a documentation
			// address (TEST-NET-1) stands in. Nothing listens outside
			// 127.0.0.1.
			"--advertise-address=192.0.2.10",
			fmt.Sprintf("--secure-port=%d", port),
			"--cert-dir=" + filepath.Join(dir, "certs"),
			"--tls-cert-file=" + p.serverCert,
			"--tls-private-key-file=" + p.serverKey,
			"--client-ca-file=" + p.caFile,
			"--authorization-mode=RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + p.saPub,
			"--service-account-signing-key-file=" + p.saKey,
			"--service-cluster-ip-range=10.96.0.0/16",
			// Secrets and deployments bypass the watch cache: their lists
			// are Ranges on the cluster and each kubectl watch of them is
			// a watch of its own on the cluster (resumed by the etcd
			// client when its member dies). Namespaces, configmaps and
			// custom objects go through the watch cache: one cluster watch
			// per resource, lists served from memory.
			"--watch-cache-sizes=secrets#0,deployments.apps#0",
			"--profiling=false",
			"--v=1",
		},
	}
	t.Cleanup(func() {
		_ = api.kill9()
		if t.Failed() {
			t.Logf("last lines of kube-apiserver (%s):\n%s", api.logPath, api.tail(60))
		}
	})
	apiStart := time.Now()
	if _, err := api.start(); err != nil {
		t.Fatal(err)
	}
	server := fmt.Sprintf("https://127.0.0.1:%d", port)
	waitReadyz(t, api, server, p)
	t.Logf("kube-apiserver ready (/readyz ok) in %v", time.Since(apiStart).Round(time.Millisecond))

	kubeconfig := filepath.Join(dir, "kubeconfig")
	writeKubeconfig(t, kubeconfig, server, p)
	klog, err := os.Create(filepath.Join(dir, "kubectl.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer klog.Close()
	k := &kubectl{t: t, bin: filepath.Join(kubeDir, "kubectl"), kubeconfig: kubeconfig, logMu: &sync.Mutex{}, log: klog}
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(klog.Name())
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("last kubectl commands (%s):\n%s", klog.Name(), strings.Join(lines[max(0, len(lines)-30):], "\n"))
		}
	})

	// Sanity: the server is who we think, and kubectl is authenticated as
	// a cluster admin.
	ver := k.must("version", "-o", "json")
	if !strings.Contains(ver, `"gitVersion": "v1.37`) {
		t.Errorf("kubectl version: want client and server v1.37.x:\n%s", ver)
	}
	if got := strings.TrimSpace(k.must("auth", "can-i", "*", "*", "--all-namespaces")); got != "yes" {
		t.Fatalf("kubectl auth can-i '*' '*': %q, want yes", got)
	}

	rec := &recorder{}

	// --- namespaces
	nsW := k.watch("namespaces", "")
	if _, ok := nsW.waitFor(30*time.Second, func(e watchEvent) bool { return e.Object.Metadata.Name == "default" }); !ok {
		t.Fatalf("namespace watch printed no 'default' namespace: %s", nsW.status())
	}
	rec.obj("namespaces", "ADDED", k.mustObj("", "create", "namespace", ns, "-o", "json"))
	got := k.mustObj("", "get", "namespace", ns, "-o", "json")
	if !strings.Contains(string(got.Raw), `"phase": "Active"`) {
		t.Errorf("namespace %s is not Active:\n%s", ns, got.Raw)
	}
	// kube-apiserver answers a patch of a namespace with the object as it
	// was read (the old resourceVersion; etcd or not), so the change is
	// recorded from a get.
	k.must("label", "namespace", ns, "suite=kube-apiserver")
	rec.obj("namespaces", "MODIFIED", k.mustObj("", "get", "namespace", ns, "-o", "json"))
	if _, _, err := k.run("", "create", "namespace", ns); err == nil || !strings.Contains(err.Error(), "AlreadyExists") {
		t.Errorf("creating namespace %s twice: want an AlreadyExists error, got %v", ns, err)
	}

	// --- watches of the namespace's resources, each made live by a sentinel
	cmW := k.watch("configmaps", ns)
	secW := k.watch("secrets", ns)
	depW := k.watch("deployments.apps", ns)
	rec.obj("configmaps", "ADDED", k.mustObj("", "create", "configmap", "sentinel", "-n", ns, "--from-literal=s=1", "-o", "json"))
	rec.obj("secrets", "ADDED", k.mustObj("", "create", "secret", "generic", "sentinel", "-n", ns, "--from-literal=s=1", "-o", "json"))
	rec.obj("deployments", "ADDED", k.mustObj("", "create", "deployment", "sentinel", "-n", ns, "--image=registry.k8s.io/pause:3.10", "-o", "json"))
	for _, w := range []*watcher{cmW, secW, depW} {
		if _, ok := w.waitFor(30*time.Second, func(e watchEvent) bool { return e.Object.Metadata.Name == "sentinel" }); !ok {
			t.Fatalf("watch of %s did not print the sentinel: %s", w.resource, w.status())
		}
	}

	// --- configmaps: create, apply (client- and server-side), patch (merge,
	// JSON, strategic), label, annotate, replace, conflicts, paged list,
	// delete.
	rec.obj("configmaps", "ADDED", k.mustObj("", "create", "configmap", "cm-a", "-n", ns, "--from-literal=k=v1", "-o", "json"))
	cmB := func(v string) string {
		return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-b\n  namespace: %s\ndata:\n  v: %q\n", ns, v)
	}
	rec.obj("configmaps", "ADDED", k.mustObj(cmB("1"), "apply", "-f", "-", "-o", "json"))
	b2 := k.mustObj(cmB("2"), "apply", "-f", "-", "-o", "json")
	rec.obj("configmaps", "MODIFIED", b2)
	if b2again := k.mustObj(cmB("2"), "apply", "-f", "-", "-o", "json"); b2again.rv() != b2.rv() {
		t.Errorf("re-applying an unchanged configmap changed its resourceVersion %d -> %d", b2.rv(), b2again.rv())
	}
	cmC := func(v string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm-c","namespace":%q},"data":{"v":%q}}`, ns, v)
	}
	rec.obj("configmaps", "ADDED", k.mustObj(cmC("1"), "apply", "--server-side", "--field-manager=kcompat", "-f", "-", "-o", "json"))
	rec.obj("configmaps", "MODIFIED", k.mustObj(cmC("2"), "apply", "--server-side", "--field-manager=kcompat", "-f", "-", "-o", "json"))
	rec.obj("configmaps", "MODIFIED", k.mustObj("", "patch", "configmap", "cm-a", "-n", ns, "--type=merge", "-p", `{"data":{"k":"v2"}}`, "-o", "json"))
	rec.obj("configmaps", "MODIFIED", k.mustObj("", "patch", "configmap", "cm-a", "-n", ns, "--type=json", "-p", `[{"op":"add","path":"/data/j","value":"json"}]`, "-o", "json"))
	rec.obj("configmaps", "MODIFIED", k.mustObj("", "patch", "configmap", "cm-a", "-n", ns, "-p", `{"data":{"s":"strategic"}}`, "-o", "json"))
	rec.obj("configmaps", "MODIFIED", k.mustObj("", "label", "configmap", "cm-a", "-n", ns, "tier=one", "-o", "json"))
	rec.obj("configmaps", "MODIFIED", k.mustObj("", "annotate", "configmap", "cm-a", "-n", ns, "note=hi", "-o", "json"))
	a := k.mustObj("", "get", "configmap", "cm-a", "-n", ns, "-o", "json")
	wantData := map[string]string{"k": "v2", "j": "json", "s": "strategic"}
	if !mapsEqual(a.Data, wantData) || a.Metadata.Labels["tier"] != "one" || a.Metadata.Annotations["note"] != "hi" {
		t.Errorf("cm-a after the patches: data %v labels %v annotations %v; want data %v, tier=one, note=hi", a.Data, a.Metadata.Labels, a.Metadata.Annotations, wantData)
	}
	// replace with the current resourceVersion, then with the now stale one
	replaced := setData(t, a.Raw, "k", "v3")
	r := k.mustObj(string(replaced), "replace", "-f", "-", "-o", "json")
	rec.obj("configmaps", "MODIFIED", r)
	if r.Data["k"] != "v3" {
		t.Errorf("cm-a after replace: data.k=%q, want v3", r.Data["k"])
	}
	stale := setData(t, a.Raw, "k", "stale")
	if _, _, err := k.run(string(stale), "replace", "-f", "-"); err == nil || !strings.Contains(err.Error(), "the object has been modified") {
		t.Errorf("replace with the stale resourceVersion %s: want a Conflict (the object has been modified), got %v", a.Metadata.ResourceVersion, err)
	}
	if _, _, err := k.run("", "create", "configmap", "cm-a", "-n", ns); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("creating configmap cm-a twice: want \"already exists\", got %v", err)
	}
	gen := k.mustObj(fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-","namespace":%q},"data":{"g":"1"}}`, ns), "create", "-f", "-", "-o", "json")
	rec.obj("configmaps", "ADDED", gen)
	if !strings.HasPrefix(gen.Metadata.Name, "gen-") || len(gen.Metadata.Name) <= 4 {
		t.Errorf("generateName gen-: got name %q", gen.Metadata.Name)
	}
	for i := range 7 {
		rec.obj("configmaps", "ADDED", k.mustObj(fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bulk-%d","namespace":%q,"labels":{"bulk":"yes"}},"data":{"i":"%d"}}`, i, ns, i), "create", "-f", "-", "-o", "json"))
	}
	for _, chunk := range []string{"2", "500"} {
		list := k.mustObj("", "get", "configmaps", "-n", ns, "-l", "bulk=yes", "--chunk-size="+chunk, "-o", "json")
		var names []string
		for _, it := range list.items(t) {
			names = append(names, it.Metadata.Name)
		}
		if want := []string{"bulk-0", "bulk-1", "bulk-2", "bulk-3", "bulk-4", "bulk-5", "bulk-6"}; !slices.Equal(names, want) {
			t.Errorf("kubectl get configmaps -l bulk=yes --chunk-size=%s: %v, want %v", chunk, names, want)
		}
	}
	// The state at that list's resourceVersion stays readable after the
	// deletes (resourceVersionMatch=Exact: the cluster's MVCC history, or
	// the watch cache's).
	bulkList := parseObj(t, k.must("get", "--raw", "/api/v1/namespaces/"+ns+"/configmaps?labelSelector=bulk%3Dyes"))
	bulkRV := bulkList.Metadata.ResourceVersion
	if len(bulkList.Items) != 7 || bulkRV == "" {
		t.Fatalf("list of configmaps -l bulk=yes: %d items at resourceVersion %q, want 7", len(bulkList.Items), bulkRV)
	}
	out := k.must("delete", "configmaps", "-n", ns, "-l", "bulk=yes")
	for i := range 7 {
		rec.deleted("configmaps", fmt.Sprintf("bulk-%d", i))
	}
	if n := strings.Count(out, "deleted"); n != 7 {
		t.Errorf("kubectl delete configmaps -l bulk=yes: %d deleted, want 7:\n%s", n, out)
	}
	k.must("delete", "configmap", "cm-b", "-n", ns)
	rec.deleted("configmaps", "cm-b")
	for _, path := range []string{"/api/v1/namespaces/" + ns + "/configmaps", "/api/v1/namespaces/" + ns + "/secrets"} {
		old := parseObj(t, k.must("get", "--raw", path+"?labelSelector=bulk%3Dyes&resourceVersionMatch=Exact&resourceVersion="+bulkRV))
		if path == "/api/v1/namespaces/"+ns+"/configmaps" && len(old.Items) != 7 {
			t.Errorf("configmaps at resourceVersion %s (Exact), after their delete: %d items, want 7", bulkRV, len(old.Items))
		}
		if old.Metadata.ResourceVersion != bulkRV {
			t.Errorf("list of %s at resourceVersion %s (Exact) answered resourceVersion %s", path, bulkRV, old.Metadata.ResourceVersion)
		}
	}
	if now := parseObj(t, k.must("get", "--raw", "/api/v1/namespaces/"+ns+"/configmaps?labelSelector=bulk%3Dyes")); len(now.Items) != 0 {
		t.Errorf("configmaps -l bulk=yes after their delete: %d items, want 0", len(now.Items))
	}
	// A configmap of 700 KiB (Kubernetes allows 1 MiB), created and
	// replaced whole.
	for _, fill := range []string{"a", "b"} {
		big := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"big","namespace":%q},"data":{"blob":%q}}`, ns, strings.Repeat(fill, 700<<10))
		verb, typ := "create", "ADDED"
		if fill == "b" {
			verb, typ = "replace", "MODIFIED"
		}
		rec.obj("configmaps", typ, k.mustObj(big, verb, "-f", "-", "-o", "json"))
		if got := k.must("get", "configmap", "big", "-n", ns, "-o", "jsonpath={.data.blob}"); got != strings.Repeat(fill, 700<<10) {
			t.Errorf("configmap big after %s: %d bytes read back, want 700 KiB of %q", verb, len(got), fill)
		}
	}
	if _, _, err := k.run("", "get", "configmap", "cm-b", "-n", ns); err == nil || !strings.Contains(err.Error(), "NotFound") {
		t.Errorf("get of the deleted configmap cm-b: want NotFound, got %v", err)
	}

	// --- secrets
	rec.obj("secrets", "ADDED", k.mustObj("", "create", "secret", "generic", "s-a", "-n", ns, "--from-literal=password=p1", "-o", "json"))
	rec.obj("secrets", "MODIFIED", k.mustObj("", "patch", "secret", "s-a", "-n", ns, "--type=merge", "-p", `{"stringData":{"password":"p2"}}`, "-o", "json"))
	pw := k.must("get", "secret", "s-a", "-n", ns, "-o", "jsonpath={.data.password}")
	if dec, _ := base64.StdEncoding.DecodeString(pw); string(dec) != "p2" {
		t.Errorf("secret s-a password: %q (base64 %q), want p2", dec, pw)
	}
	rec.obj("secrets", "ADDED", k.mustObj("", "create", "secret", "generic", "s-b", "-n", ns, "--from-literal=x=y", "-o", "json"))

	// --- a deployment (no controllers run: it is only stored and watched)
	rec.obj("deployments", "ADDED", k.mustObj("", "create", "deployment", "web", "-n", ns, "--image=registry.k8s.io/pause:3.10", "--replicas=2", "-o", "json"))
	k.must("scale", "deployment", "web", "-n", ns, "--replicas=3")
	rec.obj("deployments", "MODIFIED", k.mustObj("", "get", "deployment", "web", "-n", ns, "-o", "json"))
	rec.obj("deployments", "MODIFIED", k.mustObj("", "set", "image", "deployment/web", "-n", ns, "pause=registry.k8s.io/pause:3.9", "-o", "json"))
	k.must("rollout", "pause", "deployment/web", "-n", ns)
	dep := k.must("get", "deployment", "web", "-n", ns, "-o", "jsonpath={.spec.replicas} {.spec.paused} {.spec.template.spec.containers[0].image}")
	if dep != "3 true registry.k8s.io/pause:3.9" {
		t.Errorf("deployment web: replicas, paused, image = %q, want \"3 true registry.k8s.io/pause:3.9\"", dep)
	}
	rec.obj("deployments", "MODIFIED", k.mustObj("", "get", "deployment", "web", "-n", ns, "-o", "json"))
	if scale := k.must("get", "--raw", "/apis/apps/v1/namespaces/"+ns+"/deployments/web/scale"); !strings.Contains(scale, `"replicas":3`) {
		t.Errorf("scale subresource of deployment web: %s", scale)
	}

	// --- a CRD and custom objects of it
	k.mustIn(crdYAML, "apply", "-f", "-")
	k.must("wait", "--for=condition=Established", "--timeout=60s", "crd/"+crd)
	widW := k.watch(crd, ns)
	rec.obj("widgets", "ADDED", k.mustObj(widgetYAML("sentinel", 0), "create", "-f", "-", "-o", "json"))
	if _, ok := widW.waitFor(30*time.Second, func(e watchEvent) bool { return e.Object.Metadata.Name == "sentinel" }); !ok {
		t.Fatalf("watch of %s did not print the sentinel: %s", crd, widW.status())
	}
	rec.obj("widgets", "ADDED", k.mustObj(widgetYAML("w-a", 1), "apply", "-f", "-", "-o", "json"))
	rec.obj("widgets", "MODIFIED", k.mustObj("", "patch", "widget", "w-a", "-n", ns, "--type=merge", "-p", `{"spec":{"size":2}}`, "-o", "json"))
	rec.obj("widgets", "MODIFIED", k.mustObj("", "patch", "widget", "w-a", "-n", ns, "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Ready"}}`, "-o", "json"))
	rec.obj("widgets", "ADDED", k.mustObj(widgetYAML("w-b", 5), "create", "-f", "-", "-o", "json"))
	if got := k.must("get", "widgets", "-n", ns, "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.size}/{.status.phase} {end}"); got != "sentinel=0/ w-a=2/Ready w-b=5/ " {
		t.Errorf("kubectl get widgets: %q, want \"sentinel=0/ w-a=2/Ready w-b=5/ \"", got)
	}
	if _, _, err := k.run("", "patch", "widget", "w-a", "-n", ns, "--type=merge", "-p", `{"spec":{"size":"big"}}`); err == nil || !strings.Contains(err.Error(), "Invalid") {
		t.Errorf("patching widget w-a with a string size: want a schema validation error, got %v", err)
	}
	k.must("delete", "widget", "w-b", "-n", ns)
	rec.deleted("widgets", "w-b")
	t.Logf("CRUD walk done in %v", time.Since(testStart).Round(time.Millisecond))

	// --- writes go on while members are killed with SIGKILL and restarted
	wr := &writer{k: k, rec: rec}
	wr.start()
	stopWriter := sync.OnceFunc(wr.stop)
	defer stopWriter()
	wr.waitWrites(t, 10, "before any fault")

	// Fault 1: the leader.
	first, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fault 1: SIGKILL the leader %s (kube-apiserver connections per member: %v)", c.members[first].name, apiConnections(t, api, c))
	faultRound(t, c, wr, first)

	// Fault 2: a follower kube-apiserver is talking to, not killed yet:
	// the one with the most established connections from kube-apiserver.
	lead, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	conns := apiConnections(t, api, c)
	second := -1
	for i := range c.members {
		if i != lead && i != first && (second < 0 || conns[i] > conns[second]) {
			second = i
		}
	}
	if conns[second] == 0 {
		t.Errorf("kube-apiserver has no connection to follower %s: connections per member %v", c.members[second].name, conns)
	}
	t.Logf("fault 2: SIGKILL follower %s, which kube-apiserver has %d connections to (per member: %v)", c.members[second].name, conns[second], conns)
	faultRound(t, c, wr, second)

	// Fault 3: the member not killed yet (usually the leader elected after
	// fault 1), so that every member has been killed and restarted once.
	third := 3 - first - second
	lead, err = c.leader()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fault 3: SIGKILL %s (leader: %v; kube-apiserver connections per member: %v)", c.members[third].name, third == lead, apiConnections(t, api, c))
	faultRound(t, c, wr, third)
	wr.waitWrites(t, 10, "after the restarts")
	stopWriter()
	t.Logf("writer: %d writes, %d failed attempts (retried): %v", wr.ok.Load(), len(wr.failures()), wr.failures())
	if wr.fatal != nil {
		t.Fatalf("writer: %v", wr.fatal)
	}

	// --- more changes after the restarts, and deletes
	rec.obj("configmaps", "MODIFIED", k.mustObj("", "patch", "configmap", "cm-a", "-n", ns, "--type=merge", "-p", `{"data":{"after":"restart"}}`, "-o", "json"))
	k.must("delete", "secret", "s-a", "-n", ns)
	rec.deleted("secrets", "s-a")
	k.must("scale", "deployment", "web", "-n", ns, "--replicas=1")
	rec.obj("deployments", "MODIFIED", k.mustObj("", "get", "deployment", "web", "-n", ns, "-o", "json"))
	k.must("delete", "deployment", "web", "-n", ns)
	rec.deleted("deployments", "web")
	k.must("delete", "widget", "w-a", "-n", ns)
	rec.deleted("widgets", "w-a")
	// A second namespace goes all the way: deleting it only marks it
	// Terminating; without kube-controller-manager, its "kubernetes"
	// finalizer is removed by hand (the finalize subresource), which removes
	// it.
	rec.obj("namespaces", "ADDED", k.mustObj("", "create", "namespace", ns+"-tmp", "-o", "json"))
	k.must("label", "namespace", ns+"-tmp", "x=y")
	rec.obj("namespaces", "MODIFIED", k.mustObj("", "get", "namespace", ns+"-tmp", "-o", "json"))
	k.must("delete", "namespace", ns+"-tmp", "--wait=false")
	term := k.mustObj("", "get", "namespace", ns+"-tmp", "-o", "json")
	if term.Metadata.DeletionTimestamp == nil {
		t.Errorf("namespace %s-tmp after delete has no deletionTimestamp:\n%s", ns, term.Raw)
	}
	rec.obj("namespaces", "MODIFIED", term)
	k.mustIn(string(clearFinalizers(t, term.Raw)), "replace", "--raw", "/api/v1/namespaces/"+ns+"-tmp/finalize", "-f", "-")
	rec.deleted("namespaces", ns+"-tmp")
	waitGone(t, k, "namespace", ns+"-tmp", "")

	// --- every watch printed exactly the storage's history
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	isOurs := func(n string) bool { return strings.HasPrefix(n, ns) }
	checks := []struct {
		w      *watcher
		rec    string
		prefix string
		keep   func(string) bool
	}{
		{nsW, "namespaces", "/registry/namespaces/", isOurs},
		{cmW, "configmaps", "/registry/configmaps/" + ns + "/", nil},
		{secW, "secrets", "/registry/secrets/" + ns + "/", nil},
		{depW, "deployments", "/registry/deployments/" + ns + "/", nil},
		{widW, "widgets", "/registry/kcompat.rsetcd.io/widgets/" + ns + "/", nil},
	}
	for _, ch := range checks {
		t.Run("watch/"+ch.rec, func(t *testing.T) {
			checkWatch(t, ctx, cli, rec, ch.w, ch.rec, ch.prefix, ch.keep)
		})
	}

	// The objects a list returns are the state the watch events build up.
	final := k.mustObj("", "get", "configmaps", "-n", ns, "-o", "json")
	listed := map[string]string{}
	for _, it := range final.items(t) {
		listed[it.Metadata.Name] = it.Metadata.ResourceVersion
	}
	t.Run("list-matches-watch", func(t *testing.T) {
		replayed := map[string]string{}
		for _, e := range cmW.snapshot() {
			if e.Type == "DELETED" {
				delete(replayed, e.Object.Metadata.Name)
			} else {
				replayed[e.Object.Metadata.Name] = e.Object.Metadata.ResourceVersion
			}
		}
		if !mapsEqual(listed, replayed) {
			t.Errorf("configmaps: kubectl get lists %v; the watch events add up to %v", listed, replayed)
		}
	})

	// --- the members, all killed and restarted once, hold the same data
	t.Run("members-same-data", func(t *testing.T) { checkMembers(t, ctx, c, cli, listed) })

	// --- deleting the CRD removes its objects from storage (kube-apiserver's
	// own finalizer); the watch of widgets ends with it.
	t.Run("crd-delete", func(t *testing.T) {
		k := k.with(t)
		widW.stop()
		k.must("delete", "crd", crd, "--timeout=90s")
		waitGone(t, k, "crd", crd, "")
		if n, err := countKeys(ctx, cli, "/registry/kcompat.rsetcd.io/"); err != nil || n != 0 {
			t.Errorf("keys under /registry/kcompat.rsetcd.io/ after deleting the CRD: %d (%v), want 0", n, err)
		}
		if n, err := countKeys(ctx, cli, "/registry/apiextensions.k8s.io/customresourcedefinitions/"+crd); err != nil || n != 0 {
			t.Errorf("the CRD's key after deleting it: %d (%v), want 0", n, err)
		}
	})
	readyz := k.must("get", "--raw", "/readyz?verbose")
	if !strings.Contains(readyz, "[+]etcd ok") || !strings.Contains(readyz, "readyz check passed") {
		t.Errorf("/readyz?verbose at the end:\n%s", readyz)
	}
	// What kube-apiserver logged about its storage, the expected "connection
	// refused" of redials to a killed member left out.
	var storageLog []string
	refused := 0
	for _, l := range api.grepLog("etcdserver", "grpc", "etcd3", "etcd-client", "watch chan error", "storage") {
		if strings.Contains(l, "connect: connection refused") {
			refused++
		} else if strings.HasPrefix(l, "E") || strings.HasPrefix(l, "W") {
			storageLog = append(storageLog, l)
		}
	}
	t.Logf("kube-apiserver: %d redials refused by a killed member; %d other warnings/errors about storage%s", refused, len(storageLog),
		strings.Join(append([]string{""}, storageLog[max(0, len(storageLog)-20):]...), "\n"))
	t.Logf("test done in %v (killed %s, %s, %s in turn)", time.Since(testStart).Round(time.Millisecond), c.members[first].name, c.members[second].name, c.members[third].name)
}

// checkMembers compares the members' copies of the data at one revision:
// a serializable Get of every key and HashKV, and the namespace's configmap
// keys with what kubectl lists (listed).
func checkMembers(t *testing.T, ctx context.Context, c *cluster, cli *clientv3.Client, listed map[string]string) {
	head, err := cli.Get(ctx, "kube-apiserver-compat-revision-probe")
	if err != nil {
		t.Fatal(err)
	}
	rev := head.Header.Revision
	var digests []memberDigest
	for _, m := range c.members {
		d, err := digestAt(ctx, m.clientURL, rev)
		if err != nil {
			t.Fatalf("member %s: %v", m.name, err)
		}
		digests = append(digests, d)
		// Its own copy of the namespace's configmaps is what kubectl lists.
		mc, err := newClient(m.clientURL)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := mc.Get(ctx, "/registry/configmaps/"+ns+"/", withPrefixSerializableAt(rev)...)
		mc.Close()
		if err != nil {
			t.Fatalf("member %s: serializable Get: %v", m.name, err)
		}
		var keys []string
		for _, kv := range resp.Kvs {
			keys = append(keys, strings.TrimPrefix(string(kv.Key), "/registry/configmaps/"+ns+"/"))
		}
		if want := sortedKeys(listed); !slices.Equal(keys, want) {
			t.Errorf("member %s holds configmaps %v at revision %d; kubectl lists %v", m.name, keys, rev, want)
		}
	}
	for i, d := range digests {
		t.Logf("member %s at revision %d: %d keys, digest %s, HashKV %d", c.members[i].name, rev, d.keys, d.digest, d.hashKV)
		if d != digests[0] {
			t.Errorf("member %s differs from %s at revision %d: %+v vs %+v", c.members[i].name, c.members[0].name, rev, d, digests[0])
		}
	}
}

// checkWatch compares what `kubectl get --watch` printed (w) with the
// storage's history under prefix and with the writes kubectl reported.
func checkWatch(t *testing.T, ctx context.Context, cli *clientv3.Client, rec *recorder, w *watcher, resource, prefix string, keep func(string) bool) {
	stored, err := storageHistory(ctx, cli, prefix, keep)
	if err != nil {
		t.Fatal(err)
	}
	// The watch may still be catching up: wait until it printed as
	// many changes (or more) as the storage holds.
	deadline := time.Now().Add(30 * time.Second)
	var watched []change
	for {
		watched = watchedChanges(w.snapshot(), keep)
		if len(watched) >= len(stored) || time.Now().After(deadline) || !w.running() {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if d := diffChanges(watched, stored); d != "" {
		t.Errorf("kubectl get %s --watch (%s) does not match the storage history under %s:\n%s", w.resource, w.status(), prefix, d)
	} else {
		t.Logf("kubectl get %s --watch: all %d changes (%s)", w.resource, len(watched), countTypes(watched))
	}
	if !w.running() {
		t.Errorf("kubectl get %s --watch has exited: %s", w.resource, w.status())
	}
	// Every write kubectl reported is among the watched changes.
	missing := rec.missing(resource, watched)
	if len(missing) > 0 {
		t.Errorf("%d writes of %s that kubectl reported were not watched: %v\nwatched: %v", len(missing), resource, missing, watched)
	}
	if len(stored) < rec.count(resource) {
		t.Errorf("%s: storage history has %d changes, fewer than the %d writes kubectl reported", resource, len(stored), rec.count(resource))
	}
}

// faultRound kills member i with SIGKILL while the writer runs, waits for
// writes to go on without it, starts it again on its data directory and
// waits for writes to go on with it.
func faultRound(t *testing.T, c *cluster, wr *writer, i int) {
	t.Helper()
	m := c.members[i]
	wr.resetSlowest()
	if err := m.kill9(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	wr.waitWrites(t, 10, m.name+" down")
	time.Sleep(time.Second)
	slow, slowCmd := wr.resetSlowest()
	if err := m.startAndWait(memberStartTimeout); err != nil {
		t.Fatalf("restarting %s on its data directory: %v", m.name, err)
	}
	t.Logf("%s was down %v (slowest write meanwhile: %v, %s); restarted on %s", m.name, time.Since(down).Round(time.Millisecond), slow.Round(time.Millisecond), slowCmd, m.dataDir)
	wr.waitWrites(t, 10, m.name+" restarted")
}

// apiConnections counts kube-apiserver's established connections to each
// member's client port.
func apiConnections(t *testing.T, api *proc, c *cluster) []int {
	t.Helper()
	var out []int
	for _, m := range c.members {
		var port int
		fmt.Sscanf(m.clientURL[strings.LastIndex(m.clientURL, ":")+1:], "%d", &port)
		n, err := connectionsTo(api.pid(), port)
		if err != nil {
			t.Logf("counting connections to %s: %v", m.name, err)
		}
		out = append(out, n)
	}
	return out
}

func waitReadyz(t *testing.T, api *proc, server string, p *pki) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	cert, err := tls.X509KeyPair(p.clientCertPEM, p.clientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(apiserverReadyTimeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		if !api.running() {
			t.Fatalf("kube-apiserver exited before /readyz was ok; last output:\n%s", api.tail(40))
		}
		resp, err := hc.Get(server + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 && strings.TrimSpace(string(body)) == "ok" {
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("kube-apiserver /readyz not ok within %v: %s", apiserverReadyTimeout, last)
}

func writeKubeconfig(t *testing.T, path, server string, p *pki) {
	t.Helper()
	b64 := base64.StdEncoding.EncodeToString
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kcompat
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: kcompat-admin
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: kcompat
  context:
    cluster: kcompat
    user: kcompat-admin
current-context: kcompat
`, server, b64(p.caPEM), b64(p.clientCertPEM), b64(p.clientKeyPEM))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

const crdYAML = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.kcompat.rsetcd.io
spec:
  group: kcompat.rsetcd.io
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size:
                type: integer
          status:
            type: object
            properties:
              phase:
                type: string
`

func widgetYAML(name string, size int) string {
	return fmt.Sprintf("apiVersion: kcompat.rsetcd.io/v1\nkind: Widget\nmetadata:\n  name: %s\n  namespace: %s\nspec:\n  size: %d\n", name, ns, size)
}

// setData returns the object raw with data[key] = value (resourceVersion
// kept, so that replace is conditional on it).
func setData(t *testing.T, raw json.RawMessage, key, value string) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["data"].(map[string]any)[key] = value
	b, _ := json.Marshal(m)
	return b
}

// clearFinalizers returns the namespace raw with spec.finalizers emptied.
func clearFinalizers(t *testing.T, raw json.RawMessage) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["spec"] = map[string]any{"finalizers": []any{}}
	b, _ := json.Marshal(m)
	return b
}

func waitGone(t *testing.T, k *kubectl, kind, name, namespace string) {
	t.Helper()
	args := []string{"get", kind, name}
	if namespace != "" {
		args = append(args, "-n", namespace)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, _, err := k.run("", args...)
		if err != nil && strings.Contains(err.Error(), "NotFound") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s still there after 60 s (last: %v)", kind, name, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func countTypes(cs []change) string {
	n := map[string]int{}
	for _, c := range cs {
		n[c.Type]++
	}
	return fmt.Sprintf("%d ADDED, %d MODIFIED, %d DELETED", n["ADDED"], n["MODIFIED"], n["DELETED"])
}

// recorder keeps the writes kubectl reported: the object it printed (type,
// name, resourceVersion), or a delete.
type recorder struct {
	mu   sync.Mutex
	recs map[string][]change
}

func (r *recorder) obj(resource, typ string, o obj) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recs == nil {
		r.recs = map[string][]change{}
	}
	r.recs[resource] = append(r.recs[resource], change{Type: typ, Name: o.Metadata.Name, RV: o.rv()})
}

func (r *recorder) deleted(resource, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.recs == nil {
		r.recs = map[string][]change{}
	}
	r.recs[resource] = append(r.recs[resource], change{Type: "DELETED", Name: name})
}

func (r *recorder) count(resource string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.recs[resource])
}

// missing returns the recorded writes of resource not among watched: an
// ADDED/MODIFIED with the same name and resourceVersion, or a DELETED of the
// name after its last recorded write.
func (r *recorder) missing(resource string, watched []change) []change {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []change
	last := map[string]int64{}
	for _, want := range r.recs[resource] {
		found := false
		for _, w := range watched {
			if w.Name != want.Name {
				continue
			}
			if want.Type == "DELETED" && w.Type == "DELETED" && w.RV > last[want.Name] {
				found = true
				last[want.Name] = w.RV
				break
			}
			if want.Type != "DELETED" && w.RV == want.RV && w.Type == want.Type {
				found = true
				break
			}
		}
		if !found {
			out = append(out, want)
		}
		if want.Type != "DELETED" {
			last[want.Name] = max(last[want.Name], want.RV)
		}
	}
	return out
}

// writer runs kubectl writes in a loop in the background: per round a new
// configmap load-N, a patch of it, a delete of load-(N-2) every other round,
// a patch of secret s-a and of widget w-a. A failed command is retried (a
// write in flight when a member dies may fail); a write whose first attempt
// failed may have been applied, so only writes kubectl reported are
// recorded, and the retry accepts AlreadyExists/NotFound.
type writer struct {
	k     *kubectl
	rec   *recorder
	ok    atomic.Int64
	stopc chan struct{}
	done  chan struct{}
	fatal error

	mu      sync.Mutex
	errs    []string
	slowest time.Duration // longest write (all attempts) since resetSlowest
	slowCmd string
}

// resetSlowest returns the longest write since the last call, and its
// command, and starts over.
func (w *writer) resetSlowest() (time.Duration, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d, c := w.slowest, w.slowCmd
	w.slowest, w.slowCmd = 0, ""
	return d, c
}

func (w *writer) start() {
	w.stopc, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		for i := 0; ; i++ {
			select {
			case <-w.stopc:
				return
			default:
			}
			name := fmt.Sprintf("load-%d", i)
			steps := []struct {
				resource, typ, name string
				args                []string
				okIfRetried         string
			}{
				{"configmaps", "ADDED", name, []string{"create", "configmap", name, "-n", ns, fmt.Sprintf("--from-literal=i=%d", i), "-o", "json"}, "AlreadyExists"},
				{"configmaps", "MODIFIED", name, []string{"patch", "configmap", name, "-n", ns, "--type=merge", "-p", `{"data":{"step":"2"}}`, "-o", "json"}, ""},
				{"secrets", "MODIFIED", "s-a", []string{"patch", "secret", "s-a", "-n", ns, "--type=merge", "-p", fmt.Sprintf(`{"stringData":{"counter":"%d"}}`, i), "-o", "json"}, ""},
				{"widgets", "MODIFIED", "w-a", []string{"patch", "widget", "w-a", "-n", ns, "--type=merge", "-p", fmt.Sprintf(`{"spec":{"size":%d}}`, 100+i), "-o", "json"}, ""},
			}
			if i >= 2 && i%2 == 0 {
				old := fmt.Sprintf("load-%d", i-2)
				steps = append(steps, struct {
					resource, typ, name string
					args                []string
					okIfRetried         string
				}{"configmaps", "DELETED", old, []string{"delete", "configmap", old, "-n", ns}, "NotFound"})
			}
			for _, s := range steps {
				if err := w.do(s.resource, s.typ, s.name, s.args, s.okIfRetried); err != nil {
					w.fatal = err
					return
				}
			}
		}
	}()
}

func (w *writer) do(resource, typ, name string, args []string, okIfRetried string) error {
	start := time.Now()
	defer func() {
		d := time.Since(start)
		w.mu.Lock()
		if d > w.slowest {
			w.slowest, w.slowCmd = d, strings.Join(args[:3], " ")
		}
		w.mu.Unlock()
	}()
	for attempt := 1; ; attempt++ {
		out, _, err := w.k.run("", args...)
		if err == nil {
			if typ == "DELETED" {
				w.rec.deleted(resource, name)
			} else {
				var o obj
				if jerr := json.Unmarshal([]byte(out), &o); jerr != nil {
					return fmt.Errorf("kubectl %s: output: %v", strings.Join(args, " "), jerr)
				}
				w.rec.obj(resource, typ, o)
			}
			w.ok.Add(1)
			return nil
		}
		if attempt > 1 && okIfRetried != "" && strings.Contains(err.Error(), okIfRetried) {
			// The failed attempt was applied after all.
			w.ok.Add(1)
			return nil
		}
		w.mu.Lock()
		w.errs = append(w.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
		w.mu.Unlock()
		if attempt == 20 {
			return fmt.Errorf("giving up after 20 attempts: %w", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (w *writer) failures() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.errs...)
}

// waitWrites waits until the writer has made n more writes (at most 2 min).
func (w *writer) waitWrites(t *testing.T, n int64, phase string) {
	t.Helper()
	from := w.ok.Load()
	deadline := time.Now().Add(2 * time.Minute)
	for w.ok.Load() < from+n {
		select {
		case <-w.done:
			t.Fatalf("writer stopped (%s): %v", phase, w.fatal)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: only %d of %d writes in 2 min; failed attempts: %v", phase, w.ok.Load()-from, n, w.failures())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (w *writer) stop() {
	close(w.stopc)
	<-w.done
}
