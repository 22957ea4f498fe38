//go:build linux

package reliability

// The Grafana dashboard (deploy/grafana/nielsgpt.json) queries the metrics
// of the real binary: every metric name in every PromQL expression (panels
// and template variables) must be a series the server exposes, so a
// renamed metric or a typo in the dashboard fails here instead of showing
// an empty panel in production.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"nielsgpt/internal/harness"
)

type grafanaPanel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []grafanaPanel `json:"panels"` // a collapsed row's panels
}

type grafanaDashboard struct {
	UID        string         `json:"uid"`
	Title      string         `json:"title"`
	Panels     []grafanaPanel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

func TestDashboardQueriesExistingMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "deploy", "grafana", "nielsgpt.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash grafanaDashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	exprs := dashboardExprs(t, dash)
	queried := map[string]bool{}
	for _, e := range exprs {
		for _, name := range promQLMetricNames(e) {
			queried[name] = true
		}
	}
	// What the issue asks the dashboard to show, so that this test cannot
	// pass on a dashboard that lost its panels.
	for _, want := range []string{
		"nielsgpt_time_to_first_token_seconds_bucket", "nielsgpt_inter_token_latency_seconds_bucket",
		"nielsgpt_generated_tokens_total", "nielsgpt_active_streams", "nielsgpt_rejections_total", "nielsgpt_rate_limit_backend",
	} {
		if !queried[want] {
			t.Errorf("the dashboard does not query %s", want)
		}
	}

	// A real server, after one stream, so histograms with labels have
	// series too.
	s := startServer(t, harness.Spec{})
	if end := PostStream(t.Context(), ClientFrom(LoopbackIP(90)), s.URL+"/chat/stream", ChatBody("hi", 3, 0, 1), StreamOptions{}); end.Final != "done" {
		t.Fatalf("stream ended %+v", end)
	}
	exposed := scrape(t, s)
	for name := range queried {
		if !hasSeries(exposed, name) {
			t.Errorf("the dashboard queries %s, which /metrics does not expose", name)
		}
	}
}

// dashboardExprs collects every query of the dashboard, checking on the way
// that each panel has a unique id and takes its data source from the
// dashboard's variable (so it works with whatever Prometheus is chosen).
func dashboardExprs(t *testing.T, dash grafanaDashboard) []string {
	t.Helper()
	if dash.UID == "" || dash.Title == "" {
		t.Error("the dashboard has no uid or title")
	}
	var exprs []string
	ids := map[int]bool{}
	var walk func([]grafanaPanel)
	walk = func(panels []grafanaPanel) {
		for _, p := range panels {
			if ids[p.ID] {
				t.Errorf("panel id %d used twice", p.ID)
			}
			ids[p.ID] = true
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" || len(p.Targets) == 0 {
				t.Errorf("panel %q: data source %+v and %d queries; want ${datasource} and at least one", p.Title, p.Datasource, len(p.Targets))
			}
			for _, target := range p.Targets {
				exprs = append(exprs, target.Expr)
			}
		}
	}
	walk(dash.Panels)
	labelValues := regexp.MustCompile(`^label_values\(([a-zA-Z_:][a-zA-Z0-9_:]*),\s*\w+\)$`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil {
			exprs = append(exprs, m[1])
		}
	}
	return exprs
}

func hasSeries(m Metrics, name string) bool {
	for key := range m {
		if key == name || strings.HasPrefix(key, name+"{") {
			return true
		}
	}
	return false
}

// PromQL words that are not metric names: aggregation operators (which may
// be followed by by/without before their parenthesis), binary operators and
// modifiers.
var promQLWords = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "group": true, "stddev": true,
	"stdvar": true, "topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true,
	"limit_ratio": true, "and": true, "or": true, "unless": true, "atan2": true, "bool": true, "offset": true,
	"inf": true, "nan": true,
}

// Modifiers whose parenthesised list holds label names, not metrics.
var promQLLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promQLMetricNames returns the metric names an expression selects, in
// order of appearance. It is a scanner, not a parser: strings, label
// matchers ({…}), ranges ([…]), numbers and Grafana variables are skipped;
// a name followed by "(" is a function; label lists after by, on and the
// like are skipped. That covers the PromQL a dashboard uses.
func promQLMetricNames(expr string) []string {
	var names []string
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = skipQuoted(expr, i)
		case c == '{' || c == '[':
			i = skipBracketed(expr, i)
		case c >= '0' && c <= '9', c == '.':
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == '.') {
				i++
			}
		case c == '$': // a Grafana variable: $job, ${job}, $__rate_interval
			i++
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == '{' || expr[i] == '}') {
				i++
			}
		case isIdentByte(c):
			start := i
			for i < len(expr) && (isIdentByte(expr[i]) || expr[i] == ':') {
				i++
			}
			word := expr[start:i]
			next := strings.TrimLeft(expr[i:], " \t\n")
			switch {
			case promQLLabelLists[strings.ToLower(word)]:
				i = len(expr) - len(next)
				if strings.HasPrefix(next, "(") {
					i = skipBracketed(expr, i)
				}
			case promQLWords[strings.ToLower(word)], strings.HasPrefix(next, "("):
			default:
				if !slices.Contains(names, word) {
					names = append(names, word)
				}
			}
		default:
			i++
		}
	}
	return names
}

func isIdentByte(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// skipQuoted returns the index after the string literal starting at i.
func skipQuoted(s string, i int) int {
	quote := s[i]
	for i++; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quote != '`':
			i++
		case s[i] == quote:
			return i + 1
		}
	}
	return len(s)
}

// skipBracketed returns the index after the bracket opened at i, strings
// inside included.
func skipBracketed(s string, i int) int {
	open := s[i]
	closing := map[byte]byte{'{': '}', '[': ']', '(': ')'}[open]
	depth := 0
	for i < len(s) {
		switch s[i] {
		case '"', '\'', '`':
			i = skipQuoted(s, i)
			continue
		case open:
			depth++
		case closing:
			depth--
			if depth == 0 {
				return i + 1
			}
		}
		i++
	}
	return len(s)
}

// The scanner on the shapes the dashboard uses, and on ones that would fool
// a plain regular expression.
func TestPromQLMetricNames(t *testing.T) {
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, phase) (rate(a_bucket{job=~"$job", x="b(c) {d}"}[$__rate_interval])))`: {"a_bucket"},
		`sum(rate(b_total[5m])) / sum without (instance) (c)`:                                                        {"b_total", "c"},
		`d unless on(instance) group_left(le) e offset 5m > bool 1e3`:                                                {"d", "e"},
		`sum by (backend) (f{backend="redis"}) * 2.5 + count(g) or vector(0)`:                                        {"f", "g"},
		`max(h:recorded_rule) by (job)`:                                                                              {"h:recorded_rule"},
		`topk(3, sum by (route) (i)) and ignoring (x) inf`:                                                           {"i"},
	} {
		if got := promQLMetricNames(expr); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", expr, got, want)
		}
	}
}
