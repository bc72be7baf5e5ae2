package bench

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/bridgetest"
)

// freeAddr returns a 127.0.0.1 address nothing listens on (just now).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startNATS runs Debian's nats-server on a free loopback port and returns
// its URL; like the cluster tests elsewhere, it skips when there is none.
func startNATS(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
	}
	addr := freeAddr(t)
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-a", host, "-p", port)
	if err := cmd.Start(); err != nil {
		t.Skipf("nats-server not installed (apt-get install nats-server): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	bridgetest.WaitFor(t, 10*time.Second, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	return "nats://" + addr
}

// checkFanout checks what fanout promises: every message reached every
// connection, and the bridges' CPU was measured.
func checkFanout(t *testing.T, res *Result, conns, bridges int) {
	t.Helper()
	f := res.Fanout
	if f == nil {
		t.Fatal("no fanout result")
	}
	requireEqual(t, "errors", res.Errors, 0)
	requireEqual(t, "bridges", f.Bridges, bridges)
	if f.Messages < 2 {
		t.Fatalf("messages: got %d, want ≥ 2", f.Messages)
	}
	requireEqual(t, "complete", f.Complete, f.Messages)
	requireEqual(t, "deliveries", f.Deliveries, int64(f.Messages)*int64(conns))
	requireEqual(t, "last-delivery samples", f.Last.N, uint64(f.Messages))
	if f.CPU <= 0 || f.DeliveriesCPU <= 0 {
		t.Fatalf("bridge CPU: got %.3f s (%.0f deliveries per CPU-second), want > 0", f.CPU, f.DeliveriesCPU)
	}
	if f.Last.P50 <= 0 || f.Last.Max < f.Last.P50 {
		t.Fatalf("to the last: got %+v, want 0 < p50 ≤ max", f.Last)
	}
	var out bytes.Buffer
	WriteTable(&out, res)
	if want := fmt.Sprintf("on %d bridge(s)", bridges); !strings.Contains(out.String(), want) {
		t.Fatalf("table: no %q in\n%s", want, out.String())
	}
}

// TestFanout: one worker, one bridge; the mock backend runs in wsbench
// (its GET subscribes the connection to the channel).
func TestFanout(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and runs load")
	}
	beAddr := freeAddr(t)
	p := bridgetest.Start(t, bridgeBin, "http://"+beAddr+"/")
	res := run(t, &Config{Scenario: Fanout, URL: "ws://" + p.Listen, Admin: p.Admin, Backend: beAddr,
		IDPrefix: "fan", Conns: 200, Rate: 5, Duration: 2 * time.Second, Size: 64, Sources: 8, Procs: 1,
		Timeout: 10 * time.Second})
	requireEqual(t, "procs", res.Procs, 1)
	checkFanout(t, res, 200, 1)
}

// TestFanoutAdmission: upgrades the bridge refuses (503 past
// -max-pending-upgrades, as in the connect burst of a big run) are retried
// and the run goes on with every connection.
func TestFanoutAdmission(t *testing.T) {
	if testing.Short() {
		t.Skip("starts wsbridge and runs load")
	}
	beAddr := freeAddr(t)
	p := bridgetest.Start(t, bridgeBin, "http://"+beAddr+"/", "-max-pending-upgrades", "8")
	res := run(t, &Config{Scenario: Fanout, URL: "ws://" + p.Listen, Admin: p.Admin, Backend: beAddr,
		IDPrefix: "fanadm", Conns: 200, Rate: 5, Duration: 2 * time.Second, Size: 64, Sources: 8, Procs: 1,
		Timeout: 10 * time.Second, BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second})
	if res.Closes["503"] == 0 {
		t.Fatalf("closes: got %v, want some 503 (admission)", res.Closes)
	}
	requireEqual(t, "held at end", res.Held, 200)
	res.Errors -= res.Closes["503"] // refused, then retried
	checkFanout(t, res, 200, 1)
}

// TestFanoutCluster: two worker processes, two bridges sharing one port
// (-reuseport) joined over a real nats-server; the messages are published
// to the first bridge only and reach the second one's subscribers through
// the cluster.
func TestFanoutCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts nats-server, two wsbridges and worker processes")
	}
	nats := startNATS(t)
	beAddr, listen := freeAddr(t), freeAddr(t)
	var bridges []*bridgetest.Proc
	for _, id := range []string{"n1", "n2"} {
		p := bridgetest.Start(t, bridgeBin, "http://"+beAddr+"/", "-reuseport", "-listen", listen,
			"-cluster", nats, "-node-id", id)
		bridgetest.WaitFor(t, 20*time.Second, func() error {
			if v, ok := scrapeSum(p.Admin, "wsbridge_cluster_up"); !ok || v != 1 {
				return fmt.Errorf("%s: wsbridge_cluster_up %d (%v), want 1", id, v, ok)
			}
			return nil
		})
		bridges = append(bridges, p)
	}
	const conns = 300
	for _, push := range []bool{false, true} {
		name := map[bool]string{false: "channel", true: "push"}[push]
		t.Run(name, func(t *testing.T) {
			var before [2]int64
			for i, p := range bridges {
				before[i], _ = scrapeSum(p.Admin, "wsbridge_channel_deliveries_total")
			}
			res := run(t, &Config{Scenario: Fanout, URL: "ws://" + listen, Admin: bridges[0].Admin + "," + bridges[1].Admin,
				Backend: beAddr, IDPrefix: "fanmp-" + name + "-", Conns: conns, Rate: 5, Duration: 2 * time.Second, Size: 64,
				Sources: 16, Procs: 2, Timeout: 10 * time.Second, FanoutPush: push})
			requireEqual(t, "procs", res.Procs, 2)
			requireEqual(t, "mode", res.Fanout.Mode, name)
			checkFanout(t, res, conns, 2)
			if push {
				return // pushes to the second bridge's clients went through the cluster
			}
			// The kernel spread the subscribers: both bridges delivered, the
			// second only what came to it through the cluster.
			for i, p := range bridges {
				if v, ok := scrapeSum(p.Admin, "wsbridge_channel_deliveries_total"); !ok || v == before[i] {
					t.Fatalf("bridge %d: wsbridge_channel_deliveries_total %d (%v), want > %d", i+1, v, ok, before[i])
				}
			}
		})
	}
}

func TestFanoutAdmins(t *testing.T) {
	cfg, err := parse([]string{"fanout", "-admin", "127.0.0.1:7002, 127.0.0.1:7003", "-rate", "0.5"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "admins", strings.Join(cfg.admins(), "|"), "127.0.0.1:7002|127.0.0.1:7003")
	requireEqual(t, "rate", cfg.Rate, 0.5)
	if _, err := parse([]string{"push", "-admin", "127.0.0.1:7002,127.0.0.1:7003"}, &bytes.Buffer{}); err == nil {
		t.Fatal("push with two admin addresses: want an error")
	}
	if _, err := parse([]string{"fanout", "-admin", "127.0.0.1:7002,"}, &bytes.Buffer{}); err == nil {
		t.Fatal("an empty admin address: want an error")
	}
	// A bridge that does not answer is an error, not 0 CPU-seconds.
	if _, err := bridgesCPU([]string{freeAddr(t)}); err == nil {
		t.Fatal("bridgesCPU of a dead address: want an error")
	}
}

// TestProcFleetSeqStats: the parent merges the workers' Seq entries
// (totals, not increments): counts summed, the latest time kept.
func TestProcFleetSeqStats(t *testing.T) {
	f := &procFleet{}
	lines := []string{
		`{"t":{},"seq":[[1,5,100],[7,1,50]]}` + "\n" + `{"t":{},"seq":[[1,9,180]]}` + "\n",
		`{"t":{},"seq":[[1,4,150],[9,1,1]]}` + "\n",
	}
	for _, l := range lines {
		w := &workerProc{cmd: exec.Command("true"), done: make(chan struct{}), seqN: make([]int64, 8), seqLast: make([]int64, 8)}
		f.procs = append(f.procs, w)
		f.read(w, strings.NewReader(l)) // 9 is out of range: ignored
	}
	n, last := f.seqStats(1)
	requireEqual(t, "seq 1 count", n, 13)
	requireEqual(t, "seq 1 last", last, 180)
	n, last = f.seqStats(7)
	requireEqual(t, "seq 7 count", n, 1)
	requireEqual(t, "seq 7 last", last, 50)
	n, _ = f.seqStats(9) // modulo 8: seq 1
	requireEqual(t, "seq 9 count", n, 13)
}
