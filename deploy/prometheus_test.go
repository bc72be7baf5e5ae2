package deploy_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestPrometheusRules checks the alert rules and runs their unit tests with
// promtool (Debian package prometheus).
func TestPrometheusRules(t *testing.T) {
	tools := requireTools(t, "promtool")
	t.Parallel()
	for _, args := range [][]string{
		{"check", "rules", "wsbridge.rules.yml"},
		{"test", "rules", "wsbridge.rules.test.yml"},
	} {
		cmd := exec.Command(tools["promtool"], args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// wsbridgeMetrics are the series wsbridge exports (the README's metrics table), with the
// histogram's own series.
var wsbridgeMetrics = map[string]bool{
	"wsbridge_connections":                             true,
	"wsbridge_max_conns":                               true,
	"wsbridge_connections_opened_total":                true,
	"wsbridge_connections_closed_total":                true,
	"wsbridge_upgrades_refused_total":                  true,
	"wsbridge_messages_total":                          true,
	"wsbridge_backend_requests_total":                  true,
	"wsbridge_backend_request_duration_seconds_bucket": true,
	"wsbridge_backend_request_duration_seconds_sum":    true,
	"wsbridge_backend_request_duration_seconds_count":  true,
	"wsbridge_message_added_latency_seconds_bucket":    true,
	"wsbridge_message_added_latency_seconds_sum":       true,
	"wsbridge_message_added_latency_seconds_count":     true,
	"wsbridge_pushes_total":                            true,
	"wsbridge_memory_trims_total":                      true,
	"wsbridge_backend_up":                              true,
	"wsbridge_backend_stuck_calls":                     true,
	"wsbridge_backend_max_stuck":                       true,
	"wsbridge_backend_stale_conns_total":               true,
	"wsbridge_cluster_up":                              true, // with -cluster
	"wsbridge_cluster_messages_total":                  true,
	"wsbridge_cluster_request_seconds_bucket":          true,
	"wsbridge_cluster_request_seconds_sum":             true,
	"wsbridge_cluster_request_seconds_count":           true,
	"up":                                               true, // Prometheus's own, per target
}

// promqlWords are PromQL keywords and aggregation operators that are not
// followed by "(" in the dashboard's expressions.
var promqlWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "and": true, "or": true, "unless": true, "bool": true, "offset": true,
}

var (
	reLabels   = regexp.MustCompile(`\{[^}]*\}`)
	reGrouping = regexp.MustCompile(`\b(by|without|on|ignoring)\s*\([^)]*\)`)
	reRange    = regexp.MustCompile(`\[[^\]]*\]`)
	reString   = regexp.MustCompile(`"[^"]*"`)
	reIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
)

// metricNames returns the metric names a PromQL expression reads.
func metricNames(expr string) []string {
	e := reLabels.ReplaceAllString(expr, " ")
	e = reGrouping.ReplaceAllString(e, " ")
	e = reRange.ReplaceAllString(e, " ")
	e = reString.ReplaceAllString(e, " ")
	var out []string
	for _, m := range reIdent.FindAllString(e, -1) {
		if strings.HasSuffix(m, "(") || promqlWords[m] {
			continue // a function or an aggregation
		}
		out = append(out, m)
	}
	return out
}

// TestGrafanaDashboard checks that the dashboard is valid JSON and reads
// only wsbridge's metrics and the Go and process collectors'.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile("grafana/wsbridge.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana/wsbridge.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && k == "expr" {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash["panels"])
	if len(exprs) < 10 {
		t.Fatalf("dashboard expressions: got %d, want at least 10", len(exprs))
	}
	seen := map[string]bool{}
	for _, e := range exprs {
		names := metricNames(e)
		if len(names) == 0 {
			t.Fatalf("expression reads no metric: %s", e)
		}
		for _, n := range names {
			if !wsbridgeMetrics[n] && !strings.HasPrefix(n, "go_") && !strings.HasPrefix(n, "process_") {
				t.Errorf("dashboard reads %q, which wsbridge does not export (in %s)", n, e)
			}
			seen[n] = true
		}
	}
	for n := range wsbridgeMetrics {
		if strings.HasSuffix(n, "_sum") || strings.HasSuffix(n, "_count") {
			continue
		}
		if !seen[n] {
			t.Errorf("dashboard never shows %s", n)
		}
	}
}

// TestMetricNames keeps the PromQL scanner honest.
func TestMetricNames(t *testing.T) {
	got := metricNames(`histogram_quantile(0.99, sum by (le, method) (rate(wsbridge_backend_request_duration_seconds_bucket{job=~"$job"}[$__rate_interval]))) / on (job) up`)
	want := []string{"wsbridge_backend_request_duration_seconds_bucket", "up"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("metricNames: got %v, want %v", got, want)
	}
}
