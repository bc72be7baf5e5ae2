package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/loadgen"
)

// DensityResult is what a density run measured on the bridge process.
type DensityResult struct {
	Conns         int     `json:"conns"`
	RSSBefore     int64   `json:"rss_before"` // bytes, bridge started and idle
	RSSAfter      int64   `json:"rss_after"`  // bytes, with Conns idle connections
	RSSPerConn    float64 `json:"rss_per_conn"`
	RSSSettled    int64   `json:"rss_settled"` // bytes, DensitySettle later (wsbridge's -trim-memory has acted)
	RSSSettledPer float64 `json:"rss_settled_per_conn"`
	HeapBefore    int64   `json:"heap_before"` // go_memstats_heap_inuse_bytes
	HeapAfter     int64   `json:"heap_after"`
	HeapPerConn   float64 `json:"heap_per_conn"`
	CPUConnect    float64 `json:"cpu_connect_s"` // bridge CPU seconds to accept Conns
	TConns        int     `json:"throughput_conns"`
	Messages      int64   `json:"throughput_msgs"`
	MsgsPerSec    float64 `json:"throughput_msgs_per_sec"`
	CPUThroughput float64 `json:"throughput_cpu_s"` // bridge CPU seconds during the throughput run
	MsgsPerCPUSec float64 `json:"msgs_per_cpu_sec"`
	RTT           Latency `json:"throughput_rtt_ms"`
	WirePerMsgIn  float64 `json:"wire_per_msg_in,omitempty"`  // payload bytes on the wire per message, client → bridge
	WirePerMsgOut float64 `json:"wire_per_msg_out,omitempty"` // and bridge → client (the reply)
}

// DensitySettle is how long after its first reading a density run reads the
// bridge's RSS again (wsbridge trims ~10 s after the last connect).
var DensitySettle = 20 * time.Second

// RSS reads a process's resident set in bytes from /proc.
func RSS(pid int) (int64, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("bench: no VmRSS in /proc/%d/status", pid)
}

// procStats reads a process's resident set (bytes) and CPU time (seconds,
// user+system; CLK_TCK is 100 on Linux).
func procStats(pid int) (rss int64, cpu float64, err error) {
	if rss, err = RSS(pid); err != nil {
		return 0, 0, err
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	stt, _ := strconv.ParseInt(f[12], 10, 64)
	return rss, float64(ut+stt) / 100, nil
}

// findBridge locates the wsbridge binary.
func findBridge(cfg *Config) (string, error) {
	if cfg.BridgeBin != "" {
		return cfg.BridgeBin, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "wsbridge")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath("wsbridge")
	if err != nil {
		return "", fmt.Errorf("bench: density: no wsbridge binary (give -bridge): %w", err)
	}
	return p, nil
}

// startBridge runs wsbridge against backendURL on ephemeral ports and
// returns it with its WebSocket and admin addresses.
func startBridge(ctx context.Context, bin, backendURL, extra string) (*exec.Cmd, string, string, error) {
	args := []string{"-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-backend", backendURL,
		"-log-level", "info", "-drain-timeout", "5s"}
	args = append(args, strings.Fields(extra)...)
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", "", fmt.Errorf("bench: starting %s: %w", bin, err)
	}
	addrs := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "wsbridge listening" {
				addrs <- [2]string{fmt.Sprint(m["listen"]), fmt.Sprint(m["admin"])}
			} else if bytes.Contains(sc.Bytes(), []byte(`"level":"error"`)) || bytes.Contains(sc.Bytes(), []byte("panic")) {
				fmt.Fprintln(os.Stderr, "wsbridge:", sc.Text())
			}
		}
	}()
	select {
	case a := <-addrs:
		return cmd, a[0], a[1], nil
	case <-time.After(20 * time.Second):
	case <-ctx.Done():
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return nil, "", "", fmt.Errorf("bench: %s did not start", bin)
}

// runDensity starts a bridge, holds Conns idle connections and measures the
// bridge's memory per connection, then runs a closed-loop throughput run and
// measures messages per bridge CPU-second.
func runDensity(ctx context.Context, r *runner) (*Result, error) {
	cfg := r.cfg
	bin, err := findBridge(cfg)
	if err != nil {
		return nil, err
	}
	if r.be == nil {
		be, err := backend.Start(backend.Options{Sequenced: true})
		if err != nil {
			return nil, err
		}
		defer be.Close()
		r.be = be
	}
	cmd, listen, admin, err := startBridge(ctx, bin, r.be.URL, cfg.BridgeArgs)
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	cfg.URL, cfg.Admin = "ws://"+listen, admin
	pid := cmd.Process.Pid
	fmt.Fprintf(r.errw, "[density] wsbridge pid %d on %s (admin %s)\n", pid, listen, admin)

	d := &DensityResult{Conns: cfg.Conns, TConns: cfg.TConns}
	time.Sleep(time.Second) // let the fresh process settle before the baseline
	rss0, cpu0, err := procStats(pid)
	if err != nil {
		return nil, err
	}
	heap0, _ := scrapeSum(admin, "go_memstats_heap_inuse_bytes")

	// Phase 1: idle connections.
	idle := &runner{cfg: cfg, errw: r.errw, be: r.be, gets: func() (int64, bool) { return 0, false }}
	if err := idle.launch(loadgen.Hold, cfg.Conns, nil); err != nil {
		return nil, err
	}
	res := idle.newResult()
	if err := idle.allHeld(ctx, cfg.Conns); err != nil {
		_ = idle.end(res)
		return res, err
	}
	idle.until(ctx, time.Now().Add(2*time.Second), nil) // settle
	rss1, cpu1, err := procStats(pid)
	if err != nil {
		return nil, err
	}
	heap1, _ := scrapeSum(admin, "go_memstats_heap_inuse_bytes")
	d.RSSBefore, d.RSSAfter, d.HeapBefore, d.HeapAfter = rss0, rss1, heap0, heap1
	d.RSSPerConn = float64(rss1-rss0) / float64(cfg.Conns)
	d.HeapPerConn = float64(heap1-heap0) / float64(cfg.Conns)
	d.CPUConnect = cpu1 - cpu0
	// Once more when the bridge has settled: an idle bridge keeps what the
	// burst of connects left until -trim-memory returns it.
	idle.until(ctx, time.Now().Add(DensitySettle), nil)
	if rss2, _, err := procStats(pid); err == nil {
		d.RSSSettled, d.RSSSettledPer = rss2, float64(rss2-rss0)/float64(cfg.Conns)
	}
	res.Seconds = time.Since(idle.start).Seconds()
	err = idle.end(res)
	idle.finish(res)
	if err != nil {
		return res, err
	}
	_ = backend.Wait(30*time.Second, func() bool { return r.be.Open() == 0 })

	// Phase 2: messages per bridge CPU-second.
	tcfg := *cfg
	tcfg.Scenario, tcfg.Conns, tcfg.IDPrefix = Throughput, cfg.TConns, cfg.IDPrefix+"t"
	tr := &runner{cfg: &tcfg, errw: r.errw, be: r.be, gets: func() (int64, bool) { return 0, false }}
	_, cpu2, _ := procStats(pid)
	tres, err := tr.throughput(ctx)
	_, cpu3, _ := procStats(pid)
	if tres != nil {
		tr.finish(tres)
		d.Messages, d.MsgsPerSec, d.RTT = tres.Recv, tres.MsgsPerSec, tres.RTT
		if tres.Sent > 0 && tres.Recv > 0 {
			d.WirePerMsgIn = float64(tres.WireSent) / float64(tres.Sent)
			d.WirePerMsgOut = float64(tres.WireRecv) / float64(tres.Recv)
		}
		d.CPUThroughput = cpu3 - cpu2
		if d.CPUThroughput > 0 {
			d.MsgsPerCPUSec = float64(tres.Recv) / d.CPUThroughput
		}
		res.Errors += tres.Errors
		for k, v := range tres.ErrorKinds {
			res.ErrorKinds["throughput_"+k] = v
		}
		res.Violations = max(res.Violations, tres.Violations)
	}
	res.Density = d
	res.Scenario = Density
	r.procs = idle.procs
	r.cur, r.maxHeld, r.lat, r.hs, r.series = idle.cur, idle.maxHeld, tr.lat, idle.hs, idle.series
	return res, err
}
