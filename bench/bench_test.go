package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

var bridgeBin string

func TestMain(m *testing.M) {
	// The multi-process tests re-execute this test binary as a worker.
	if len(os.Args) > 1 && os.Args[1] == WorkerArg {
		os.Exit(Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(bridgetest.RunWithBridge(m, &bridgeBin))
}

func requireEqual[T comparable](t testing.TB, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

// setup starts a mock backend and a bridge in front of it.
func setup(t *testing.T, args ...string) (*backend.Backend, *bridgetest.Proc) {
	t.Helper()
	return setupWith(t, backend.Options{Sequenced: true}, args...)
}

// setupWith is setup with the mock backend's options; the test fails if
// the backend saw a protocol violation.
func setupWith(t *testing.T, opts backend.Options, args ...string) (*backend.Backend, *bridgetest.Proc) {
	t.Helper()
	be, err := backend.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if v := be.Violations.Load(); v != 0 {
			t.Errorf("backend saw %d violations, last: %s", v, be.LastViolation())
		}
		_ = be.Close()
	})
	return be, bridgetest.Start(t, bridgeBin, be.URL, args...)
}

func run(t *testing.T, cfg *Config) *Result {
	t.Helper()
	cfg.Quiet = !testing.Verbose()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var log bytes.Buffer
	res, err := Run(ctx, cfg, &log)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	var out bytes.Buffer
	if err := Write(res, &Config{}, &out, &out); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s%s", log.String(), out.String())
	return res
}

// sane checks what every scenario promises: no errors, all held.
func sane(t *testing.T, res *Result, held int64) {
	t.Helper()
	requireEqual(t, "errors", res.Errors, 0)
	requireEqual(t, "max held", res.MaxHeld, held)
}

func waitBackendIdle(t *testing.T, be *backend.Backend) {
	t.Helper()
	bridgetest.WaitFor(t, 15*time.Second, func() error {
		if n := be.Open(); n != 0 {
			return fmt.Errorf("backend: got %d open connections, want 0", n)
		}
		return nil
	})
}

func TestScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and runs load")
	}
	be, p := setup(t)
	base := func(scenario string, conns int, d time.Duration) *Config {
		return &Config{Scenario: scenario, URL: "ws://" + p.Listen, Admin: p.Admin, Backend: "none",
			IDPrefix: scenario, Conns: conns, Duration: d, Size: 64, Sources: 8, Procs: 1,
			Timeout: 10 * time.Second, Interval: 10 * time.Second, Ramp: time.Second,
			BackoffBase: 200 * time.Millisecond, BackoffMax: 2 * time.Second}
	}
	t.Run("ramp", func(t *testing.T) {
		cfg := base(Ramp, 200, 2*time.Second)
		cfg.Interval = 500 * time.Millisecond
		res := run(t, cfg)
		sane(t, res, 200)
		requireEqual(t, "held at end", res.Held, 200)
		if res.MsgsPerSec < 200 || res.RTT.N == 0 || res.RTT.P99 <= 0 {
			t.Fatalf("got %.0f msgs/s, %d latencies, want ≥ 200 msgs/s (200 conns every 0.5 s)", res.MsgsPerSec, res.RTT.N)
		}
		if len(res.Series) < 2 {
			t.Fatalf("got %d points in the series, want ≥ 2", len(res.Series))
		}
		var csv bytes.Buffer
		if err := WriteCSV(&csv, res.Series); err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(csv.String(), "seconds,connections,rps,p99_ms,errors,backend_gets_per_sec,p50_ms,p90_ms,max_ms\n") {
			t.Fatalf("csv header: %q", csv.String())
		}
		// Every second with replies has ordered quantiles.
		for _, p := range res.Series {
			if p.RPS > 0 && !(p.P50 > 0 && p.P50 <= p.P90 && p.P90 <= p.P99 && p.P99 <= p.Max) {
				t.Fatalf("second %d: p50 %.3f p90 %.3f p99 %.3f max %.3f ms, want 0 < p50 ≤ p90 ≤ p99 ≤ max",
					p.Sec, p.P50, p.P90, p.P99, p.Max)
			}
		}
		waitBackendIdle(t, be)
	})
	t.Run("throughput", func(t *testing.T) {
		res := run(t, base(Throughput, 200, 2*time.Second))
		sane(t, res, 200)
		if res.MsgsPerSec <= 0 || res.RTT.P50 <= 0 {
			t.Fatalf("got %.0f msgs/s, p50 %.3f ms, want > 0", res.MsgsPerSec, res.RTT.P50)
		}
		waitBackendIdle(t, be)
	})
	t.Run("handshake", func(t *testing.T) {
		res := run(t, base(Handshake, 50, 2*time.Second))
		requireEqual(t, "errors", res.Errors, 0)
		if res.UpgradesPerSec <= 0 || res.Upgrade.N == 0 {
			t.Fatalf("got %.0f upgrades/s, want > 0", res.UpgradesPerSec)
		}
		waitBackendIdle(t, be)
	})
	t.Run("push", func(t *testing.T) {
		res := run(t, base(Push, 200, 2*time.Second))
		sane(t, res, 200)
		requireEqual(t, "push errors", res.PushErrors, 0)
		if res.PushesPerSec <= 0 || res.Recv != res.Pushes || res.RTT.N == 0 {
			t.Fatalf("got %.0f pushes/s, %d pushed, %d delivered, want > 0 and all delivered", res.PushesPerSec, res.Pushes, res.Recv)
		}
		waitBackendIdle(t, be)
	})
	t.Run("storm-drop", func(t *testing.T) {
		gets0 := be.Gets.Load()
		cfg := base(Storm, 200, 30*time.Second)
		cfg.Backend = "none"
		res := run(t, cfg)
		sane(t, res, 200)
		if !res.StormComplete || res.StormSeconds <= 0 {
			t.Fatalf("storm: complete %v after %.2f s, want all back", res.StormComplete, res.StormSeconds)
		}
		requireEqual(t, "dropped", res.Closes["dropped"], 200)
		if got := be.Gets.Load() - gets0; got < 400 {
			t.Fatalf("backend GETs: got %d, want ≥ 400 (connect + reconnect)", got)
		}
		waitBackendIdle(t, be)
	})
}

// TestStormRestart drains one bridge while a second one shares its port
// (-reuseport): clients get 1012 with retry=N and come back to the new one.
func TestStormRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and runs load")
	}
	be, old := setup(t, "-reuseport", "-drain-timeout", "2s")
	fresh := bridgetest.Start(t, bridgeBin, be.URL, "-reuseport", "-listen", old.Listen)
	_ = fresh
	res := run(t, &Config{Scenario: Storm, URL: "ws://" + old.Listen, Admin: old.Admin, Backend: "none",
		IDPrefix: "restart", Conns: 200, Duration: 40 * time.Second, Size: 64, Sources: 8, Procs: 1,
		Timeout: 10 * time.Second, BackoffBase: 200 * time.Millisecond, BackoffMax: 2 * time.Second,
		// Like "systemctl restart": returns when the old process is gone.
		RestartCmd: fmt.Sprintf("kill -TERM %[1]d; while kill -0 %[1]d 2>/dev/null; do sleep 0.1; done", old.Cmd.Process.Pid)})
	if !res.StormComplete {
		t.Fatalf("storm: not all back after %.1f s", res.StormSeconds)
	}
	requireEqual(t, "held at end", res.Held, 200)
	// The kernel may hand some first connects to the new bridge already;
	// whoever was on the old one got 1012.
	if res.Closes["1012"] == 0 {
		t.Fatalf("closes: got %v, want some 1012", res.Closes)
	}
	if res.ErrorKinds["connect"]+res.ErrorKinds["timeout"] != 0 {
		t.Fatalf("errors: %v", res.ErrorKinds)
	}
	select {
	case <-old.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("old bridge did not exit after draining")
	}
	waitBackendIdle(t, be)
}

func TestMultiProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and worker processes")
	}
	be, p := setup(t)
	res := run(t, &Config{Scenario: Throughput, URL: "ws://" + p.Listen, Admin: p.Admin, Backend: "none",
		IDPrefix: "mp", Conns: 300, Duration: 2 * time.Second, Size: 64, Sources: 16, Procs: 2,
		Timeout: 10 * time.Second})
	requireEqual(t, "procs", res.Procs, 2)
	sane(t, res, 300)
	requireEqual(t, "held at end", res.Held, 300)
	requireEqual(t, "upgrades", res.Upgrades, 300)
	if res.MsgsPerSec <= 0 || res.Recv == 0 || res.RTT.N == 0 {
		t.Fatalf("got %.0f msgs/s, %d received, %d latencies, want > 0", res.MsgsPerSec, res.Recv, res.RTT.N)
	}
	// Every received reply was a POST at the backend (plus in-flight ones).
	waitBackendIdle(t, be)
	if posts := be.Posts.Load(); posts < res.Recv {
		t.Fatalf("backend POSTs: got %d, want ≥ %d replies", posts, res.Recv)
	}
	requireEqual(t, "backend GETs", be.Gets.Load(), 300)
	requireEqual(t, "backend DELETEs", be.Deletes.Load(), 300)
}

func TestDensity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and runs load")
	}
	defer func(d time.Duration) { DensitySettle = d }(DensitySettle)
	DensitySettle = 500 * time.Millisecond
	res := run(t, &Config{Scenario: Density, Conns: 300, TConns: 20, Duration: time.Second, Size: 64,
		Sources: 8, Procs: 1, Timeout: 10 * time.Second, BridgeBin: bridgeBin, IDPrefix: "d"})
	d := res.Density
	if d == nil || d.RSSAfter <= 0 || d.RSSSettled <= 0 || d.HeapAfter <= 0 || d.MsgsPerCPUSec <= 0 {
		t.Fatalf("density: got %+v, want RSS (held and settled), heap and msgs per CPU-second", d)
	}
	requireEqual(t, "errors", res.Errors, 0)
	requireEqual(t, "violations", res.Violations, 0)
}

func TestSumSeries(t *testing.T) {
	body := []byte(`# HELP wsbridge_backend_requests_total x
wsbridge_backend_requests_total{method="GET",outcome="ok"} 12
wsbridge_backend_requests_total{method="GET",outcome="error"} 3
wsbridge_backend_requests_total{method="POST",outcome="ok"} 100
go_memstats_heap_inuse_bytes 1.2345e+06
`)
	got, ok := sumSeries(body, `wsbridge_backend_requests_total{method="GET"`)
	if !ok || got != 15 {
		t.Fatalf("GETs: got %d %v, want 15", got, ok)
	}
	got, ok = sumSeries(body, "go_memstats_heap_inuse_bytes")
	if !ok || got != 1234500 {
		t.Fatalf("heap: got %d %v, want 1234500", got, ok)
	}
}

func TestParse(t *testing.T) {
	cfg, err := parse([]string{"ramp", "-conns", "1000", "-rate", "100", "-url", "ws://127.0.0.1:7001"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "scenario", cfg.Scenario, Ramp)
	requireEqual(t, "ramp", cfg.Ramp, 10*time.Second)
	requireEqual(t, "duration", cfg.Duration, 60*time.Second)
	if _, err := parse([]string{"nope"}, &bytes.Buffer{}); err == nil {
		t.Fatal("unknown scenario: want an error")
	}
	if _, err := parse([]string{"throughput", "-url", "ws://localhost:7001"}, &bytes.Buffer{}); err == nil {
		t.Fatal("host name: want an error (numeric IPv4 only)")
	}
	s := sources(300)
	requireEqual(t, "first source", s[0].String(), "127.0.1.1")
	requireEqual(t, "255th source", s[254].String(), "127.0.2.1")
}
