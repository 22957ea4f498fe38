package deploy

// Rendering the chart as `helm template` does (Helm's install action in
// client-only mode) and decoding every manifest strictly into the
// Kubernetes API types: a field the API does not have, a wrong type or a
// kind we do not expect fails the test, as it would fail `kubectl apply`.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

var chartDir = filepath.Join("helm", "nielsgpt")

// rendered is one release's manifests, decoded; nil where the chart did not
// render that kind.
type rendered struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	hpa            *autoscalingv2.HorizontalPodAutoscaler
	pdb            *policyv1.PodDisruptionBudget
	serviceMonitor *monitoringv1.ServiceMonitor
}

// renderChart runs `helm template` on the chart with vals over its values
// and returns the manifest text, or the error Helm gave.
func renderChart(t *testing.T, vals map[string]any) (string, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	install := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	install.DryRun = true
	install.ClientOnly = true
	install.Replace = true
	install.ReleaseName = "demo"
	install.Namespace = "serving"
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.30.0", Major: "1", Minor: "30"}
	install.APIVersions = chartutil.VersionSet{"monitoring.coreos.com/v1/ServiceMonitor"}
	rel, err := install.Run(chrt, vals)
	if err != nil {
		return "", err
	}
	return rel.Manifest, nil
}

// decodeRelease renders vals and decodes every document strictly.
func decodeRelease(t *testing.T, vals map[string]any) rendered {
	t.Helper()
	manifest, err := renderChart(t, vals)
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var r rendered
	for _, doc := range splitDocuments(manifest) {
		var meta struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("not YAML: %v\n%s", err, doc)
		}
		var into any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 Deployment":
			r.deployment = &appsv1.Deployment{}
			into = r.deployment
		case "v1 Service":
			r.service = &corev1.Service{}
			into = r.service
		case "autoscaling/v2 HorizontalPodAutoscaler":
			r.hpa = &autoscalingv2.HorizontalPodAutoscaler{}
			into = r.hpa
		case "policy/v1 PodDisruptionBudget":
			r.pdb = &policyv1.PodDisruptionBudget{}
			into = r.pdb
		case "monitoring.coreos.com/v1 ServiceMonitor":
			r.serviceMonitor = &monitoringv1.ServiceMonitor{}
			into = r.serviceMonitor
		default:
			t.Fatalf("unexpected object %s %s:\n%s", meta.APIVersion, meta.Kind, doc)
		}
		if err := decodeStrict(doc, into); err != nil {
			t.Fatalf("%s does not decode strictly into its API type: %v\n%s", meta.Kind, err, doc)
		}
	}
	if r.deployment == nil || r.service == nil {
		t.Fatalf("no Deployment or no Service rendered:\n%s", manifest)
	}
	return r
}

// splitDocuments cuts a multi-document manifest at its separators, dropping
// empty documents and the "# Source:" comments Helm adds.
func splitDocuments(manifest string) []string {
	var docs []string
	for _, doc := range strings.Split("\n"+manifest, "\n---") {
		if strings.TrimSpace(stripComments(doc)) != "" {
			docs = append(docs, doc)
		}
	}
	return docs
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// decodeStrict converts YAML to JSON (refusing duplicate keys) and decodes
// it refusing unknown fields, which is how the API server's strict field
// validation reads a manifest.
func decodeStrict(doc string, into any) error {
	js, err := yaml.YAMLToJSONStrict([]byte(doc))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("more than one object in one document")
	}
	return nil
}

// envOf returns the container's environment by name.
func envOf(c corev1.Container) map[string]corev1.EnvVar {
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	return env
}

// set builds a values map from dotted paths: set("a.b", 1) is {a: {b: 1}}.
func set(pairs ...any) map[string]any {
	vals := map[string]any{}
	for i := 0; i+1 < len(pairs); i += 2 {
		keys := strings.Split(pairs[i].(string), ".")
		m := vals
		for _, k := range keys[:len(keys)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[keys[len(keys)-1]] = pairs[i+1]
	}
	return vals
}
