package deploy

// What the chart promises a platform team (docs/DEPLOY.md): probes on
// /livez and /readyz, a hardened pod, a grace period longer than the drain,
// secrets only by reference, the model from any of three sources, and the
// optional autoscaler, disruption budget and ServiceMonitor wired to the
// objects they name.

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
)

// valueSets are the configurations the lint and render tests cover: the
// defaults and every optional part switched on.
var valueSets = map[string]map[string]any{
	"defaults":      nil,
	"volume model":  set("model.source", "volume", "model.volume.claimName", "models"),
	"volume .pt":    set("model.source", "volume", "model.volume.claimName", "models", "model.volume.file", "best.pt", "model.volume.readOnly", false),
	"hub model":     set("model.source", "hub", "model.hub.tokenSecret.name", "hf", "model.hub.cache.claimName", "hub-cache"),
	"hub, emptyDir": set("model.source", "hub"),
	"everything on": set("redis.urlSecret.name", "redis", "apiKeys.secret.name", "api-keys",
		"autoscaling.enabled", true, "serviceMonitor.enabled", true, "serviceMonitor.labels", map[string]any{"release": "prometheus"},
		"trustedProxies", "10.0.0.0/8", "extraEnv", []any{map[string]any{"name": "MAX_NEW_TOKENS", "value": "256"}}),
	"budget off": set("podDisruptionBudget.enabled", false),
}

// helm lint, with each value set: no error and no warning.
func TestChartLint(t *testing.T) {
	for name, vals := range valueSets {
		linter := lint.All(chartDir, vals, "serving", false)
		for _, msg := range linter.Messages {
			if msg.Severity >= support.WarningSev {
				t.Errorf("%s: helm lint: %v", name, msg)
			}
		}
	}
}

// Every value set renders, and each rendered release keeps the promises
// that do not depend on the values.
func TestChartRendersHardenedRelease(t *testing.T) {
	for name, vals := range valueSets {
		t.Run(name, func(t *testing.T) {
			r := decodeRelease(t, vals)
			checkPod(t, r)
			checkService(t, r)
		})
	}
}

func checkPod(t *testing.T, r rendered) {
	t.Helper()
	pod := r.deployment.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Containers))
	}
	c := pod.Containers[0]
	for _, probe := range []struct {
		what string
		p    *corev1.Probe
		path string
	}{{"liveness", c.LivenessProbe, "/livez"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if probe.p == nil || probe.p.HTTPGet == nil || probe.p.HTTPGet.Path != probe.path || probe.p.HTTPGet.Port.String() != "http" {
			t.Errorf("%s probe %+v, want GET %s on port http", probe.what, probe.p, probe.path)
		}
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" || c.Ports[0].ContainerPort != 8000 {
		t.Errorf("ports %+v", c.Ports)
	}
	for _, res := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		if res.Cpu().IsZero() || res.Memory().IsZero() {
			t.Errorf("resources %+v: want CPU and memory requests and limits", c.Resources)
		}
	}
	psc, sc := pod.SecurityContext, c.SecurityContext
	switch {
	case psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0:
		t.Errorf("pod security context %+v: want a non-root user", psc)
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("seccomp profile %+v, want RuntimeDefault", psc.SeccompProfile)
	case sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("container security context %+v: want a read-only root filesystem", sc)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}):
		t.Errorf("container security context %+v: want no privilege escalation and every capability dropped", sc)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("the service account token is mounted; the server never calls the API")
	}
	checkGracePeriod(t, pod, envOf(c))
	checkSecretsByReference(t, c)
}

// The kubelet's grace period must outlast the server's own shutdown:
// DRAIN_DELAY, then SHUTDOWN_TIMEOUT for streams, then one WRITE_TIMEOUT.
func checkGracePeriod(t *testing.T, pod corev1.PodSpec, env map[string]corev1.EnvVar) {
	t.Helper()
	total := time.Duration(0)
	for _, name := range []string{"DRAIN_DELAY", "SHUTDOWN_TIMEOUT", "WRITE_TIMEOUT"} {
		d, err := time.ParseDuration(env[name].Value)
		if err != nil {
			t.Fatalf("%s = %q: %v", name, env[name].Value, err)
		}
		total += d
	}
	if pod.TerminationGracePeriodSeconds == nil || time.Duration(*pod.TerminationGracePeriodSeconds)*time.Second <= total {
		t.Errorf("terminationGracePeriodSeconds %v, want more than the server's shutdown (%v)", pod.TerminationGracePeriodSeconds, total)
	}
}

// Secrets never appear as literal values: REDIS_URL may hold a password,
// HF_TOKEN and API_KEYS are credentials.
func checkSecretsByReference(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, e := range c.Env {
		secret := e.Name == "REDIS_URL" || e.Name == "HF_TOKEN" || e.Name == "API_KEYS"
		if secret && (e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil) {
			t.Errorf("%s is not taken from a Secret: %+v", e.Name, e)
		}
	}
}

// The Service reaches the pods: its selector matches their labels and its
// target port is the container's named port.
func checkService(t *testing.T, r rendered) {
	t.Helper()
	labels := r.deployment.Spec.Template.Labels
	for k, v := range r.service.Spec.Selector {
		if labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod labels %v", k, v, labels)
		}
	}
	for k, v := range r.deployment.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("Deployment selector %s=%s does not match its own pods", k, v)
		}
	}
	if len(r.service.Spec.Ports) != 1 || r.service.Spec.Ports[0].TargetPort.String() != "http" {
		t.Errorf("Service ports %+v, want one targeting http", r.service.Spec.Ports)
	}
}

// Each model source sets MODEL (and the Hub's settings) and mounts what it
// reads from.
func TestChartModelSources(t *testing.T) {
	cases := []struct {
		name, model string
		mounts      map[string]bool // mount path → read-only
		env         map[string]string
	}{
		{"defaults", "demo", map[string]bool{"/tmp": false}, nil},
		{"volume model", "/models/best.gguf", map[string]bool{"/tmp": false, "/models": true}, nil},
		{"volume .pt", "/models/best.pt", map[string]bool{"/tmp": false, "/models": false}, nil},
		{"hub model", "", map[string]bool{"/tmp": false, "/checkpoints": false},
			map[string]string{"CKPT_DIR": "/checkpoints", "CKPT_REPO_ID": "nnandal/niels-gpt", "CKPT_FILENAME": "best.pt"}},
	}
	for _, tc := range cases {
		c := decodeRelease(t, valueSets[tc.name]).deployment.Spec.Template.Spec.Containers[0]
		env := envOf(c)
		if got, ok := env["MODEL"]; !ok || got.Value != tc.model {
			t.Errorf("%s: MODEL %q, want %q", tc.name, got.Value, tc.model)
		}
		for k, v := range tc.env {
			if env[k].Value != v {
				t.Errorf("%s: %s = %q, want %q", tc.name, k, env[k].Value, v)
			}
		}
		mounts := map[string]bool{}
		for _, m := range c.VolumeMounts {
			mounts[m.MountPath] = m.ReadOnly
		}
		if len(mounts) != len(tc.mounts) {
			t.Errorf("%s: mounts %v, want %v", tc.name, mounts, tc.mounts)
		}
		for path, ro := range tc.mounts {
			if got, ok := mounts[path]; !ok || got != ro {
				t.Errorf("%s: mount %s read-only=%v (present %v), want read-only=%v", tc.name, path, got, ok, ro)
			}
		}
	}
	hub := envOf(decodeRelease(t, valueSets["hub model"]).deployment.Spec.Template.Spec.Containers[0])
	if ref := hub["HF_TOKEN"].ValueFrom; ref == nil || ref.SecretKeyRef.Name != "hf" || ref.SecretKeyRef.Key != "HF_TOKEN" {
		t.Errorf("HF_TOKEN %+v, want the key HF_TOKEN of the Secret hf", hub["HF_TOKEN"])
	}
}

// With everything on: REDIS_URL and API_KEYS from their Secrets, the
// autoscaler scaling this Deployment (and the Deployment leaving replicas
// to it), the disruption budget and the ServiceMonitor selecting these
// pods and this Service's port.
func TestChartOptionalObjects(t *testing.T) {
	r := decodeRelease(t, valueSets["everything on"])
	env := envOf(r.deployment.Spec.Template.Spec.Containers[0])
	for name, secret := range map[string]string{"REDIS_URL": "redis", "API_KEYS": "api-keys"} {
		if ref := env[name].ValueFrom; ref == nil || ref.SecretKeyRef.Name != secret {
			t.Errorf("%s %+v, want from the Secret %s", name, env[name], secret)
		}
	}
	if env["TRUSTED_PROXIES"].Value != "10.0.0.0/8" || env["MAX_NEW_TOKENS"].Value != "256" {
		t.Errorf("TRUSTED_PROXIES %q, MAX_NEW_TOKENS %q", env["TRUSTED_PROXIES"].Value, env["MAX_NEW_TOKENS"].Value)
	}
	if r.deployment.Spec.Replicas != nil {
		t.Errorf("replicas %d set while the autoscaler owns them", *r.deployment.Spec.Replicas)
	}
	if r.hpa == nil || r.hpa.Spec.ScaleTargetRef.Kind != "Deployment" || r.hpa.Spec.ScaleTargetRef.Name != r.deployment.Name || r.hpa.Spec.MinReplicas == nil || *r.hpa.Spec.MinReplicas < 2 {
		t.Fatalf("autoscaler %+v", r.hpa)
	}
	labels := r.deployment.Spec.Template.Labels
	if r.pdb == nil || r.pdb.Spec.MaxUnavailable == nil || r.pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Fatalf("disruption budget %+v", r.pdb)
	}
	for k, v := range r.pdb.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Errorf("disruption budget selects %s=%s, not these pods", k, v)
		}
	}
	sm := r.serviceMonitor
	if sm == nil || len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != r.service.Spec.Ports[0].Name || sm.Spec.Endpoints[0].Path != "/metrics" || sm.Labels["release"] != "prometheus" {
		t.Fatalf("ServiceMonitor %+v", sm)
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if r.service.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s, not this Service", k, v)
		}
	}

	plain := decodeRelease(t, valueSets["budget off"])
	if plain.hpa != nil || plain.serviceMonitor != nil || plain.pdb != nil || plain.deployment.Spec.Replicas == nil || *plain.deployment.Spec.Replicas != 2 {
		t.Errorf("defaults with the budget off: autoscaler %v, ServiceMonitor %v, budget %v, replicas %v", plain.hpa != nil, plain.serviceMonitor != nil, plain.pdb != nil, plain.deployment.Spec.Replicas)
	}
}

// Values the chart cannot serve are refused at template time with a reason,
// not deployed to fail at start.
func TestChartRefusesBadValues(t *testing.T) {
	for _, tc := range []struct {
		vals map[string]any
		want string
	}{
		{set("model.source", "volume"), "model.volume.claimName"},
		{set("model.source", "volume", "model.volume.claimName", "m", "model.volume.file", "best.pt"), "read-only volume"},
		{set("model.source", "s3"), "/model/source"},
		{set("replicaCount", 0), "replicaCount"},
		{set("rateLimit.perMin", 0), "perMin"},
		{set("redis.url", "redis://:pw@redis:6379"), "redis"}, // a URL in values would end up in plain text
		{set("logFormat", "xml"), "logFormat"},
	} {
		_, err := renderChart(t, tc.vals)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %v: error %v, want one mentioning %q", tc.vals, err, tc.want)
		}
	}
}

// Every variable the chart sets is a setting the server documents
// (docs/API.md §11), so a renamed or misspelt setting cannot go unnoticed.
// API_KEYS (documented in the chart as future) and XDG_CACHE_HOME (read by
// Go's os.UserCacheDir) are the exceptions.
func TestChartSetsOnlyServerSettings(t *testing.T) {
	api, err := os.ReadFile(filepath.Join("..", "docs", "API.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{"API_KEYS": true, "XDG_CACHE_HOME": true}
	for _, m := range regexp.MustCompile("(?m)^\\| `([A-Z_]+)`").FindAllStringSubmatch(string(api), -1) {
		documented[m[1]] = true
	}
	if !documented["REDIS_URL"] || !documented["DRAIN_DELAY"] {
		t.Fatal("docs/API.md §11 lacks REDIS_URL or DRAIN_DELAY: the table was not read")
	}
	for name, vals := range valueSets {
		for _, e := range decodeRelease(t, vals).deployment.Spec.Template.Spec.Containers[0].Env {
			if !documented[e.Name] {
				t.Errorf("%s: the chart sets %s, which docs/API.md §11 does not list", name, e.Name)
			}
		}
	}
}
