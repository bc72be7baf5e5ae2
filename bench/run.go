package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"sync/atomic"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
	"github.com/wsbridge/wsbridge/bench/loadgen"
)

// Latency is a latency summary in milliseconds.
type Latency struct {
	N   uint64  `json:"n"`
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func summarize(s *loadgen.Snapshot) Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{N: s.N, P50: ms(s.Quantile(.5)), P90: ms(s.Quantile(.9)), P99: ms(s.Quantile(.99)), Max: ms(s.Max)}
}

// Point is one second of a run.
type Point struct {
	Sec    int     `json:"sec"`
	Conns  int64   `json:"conns"`
	RPS    float64 `json:"rps"`
	P50    float64 `json:"p50_ms"`
	P90    float64 `json:"p90_ms"`
	P99    float64 `json:"p99_ms"`
	Max    float64 `json:"max_ms"`
	Errors int64   `json:"errors"`
	Gets   float64 `json:"gets_per_sec,omitempty"`
}

// Result is what a run measured; it is printed as a table and one JSON line.
type Result struct {
	Scenario string  `json:"scenario"`
	Start    string  `json:"start"`
	Seconds  float64 `json:"seconds"` // measurement window
	Procs    int     `json:"procs"`
	Conns    int     `json:"conns"`    // asked for
	Held     int64   `json:"held"`     // open at the end of the window
	MaxHeld  int64   `json:"max_held"` // most open at once
	Size     int     `json:"size"`

	Sent       int64   `json:"sent"`
	Recv       int64   `json:"recv"`
	WireSent   int64   `json:"wire_sent,omitempty"` // data frame payload bytes sent, as on the wire
	WireRecv   int64   `json:"wire_recv,omitempty"` // and received
	MsgsPerSec float64 `json:"msgs_per_sec"`
	RTT        Latency `json:"rtt_ms"` // reply round trip, or push delivery

	Upgrades       int64   `json:"upgrades"`
	UpgradesPerSec float64 `json:"upgrades_per_sec,omitempty"`
	Upgrade        Latency `json:"upgrade_ms"` // connect start to 101

	Pushes       int64   `json:"pushes,omitempty"`
	PushErrors   int64   `json:"push_errors,omitempty"`
	PushesPerSec float64 `json:"pushes_per_sec,omitempty"`

	StormSeconds  float64 `json:"storm_seconds,omitempty"`  // trigger to the last reconnect
	StormComplete bool    `json:"storm_complete,omitempty"` // all were back in time
	StormGetsMax  float64 `json:"storm_gets_per_sec_max,omitempty"`
	StormGets     int64   `json:"storm_gets,omitempty"` // backend GETs from trigger to all back

	Errors     int64            `json:"errors"`
	ErrorKinds map[string]int64 `json:"error_kinds"`
	Closes     map[string]int64 `json:"closes,omitempty"`   // close codes received
	Violations int64            `json:"backend_violations"` // -1 when the mock backend is not ours

	Density *DensityResult `json:"density,omitempty"`
	Fanout  *FanoutResult  `json:"fanout,omitempty"`
	Series  []Point        `json:"-"`
}

// runner drives one scenario.
type runner struct {
	cfg   *Config
	errw  io.Writer
	be    *backend.Backend
	f     fleet
	procs int
	start time.Time

	lat, hs    loadgen.Snapshot // whole run
	secLat     loadgen.Snapshot // current second
	cur        loadgen.Totals
	prevSec    loadgen.Totals
	nextSec    time.Time
	prevGets   int64
	gets       func() (int64, bool)
	series     []Point
	maxHeld    int64
	pushesOK   *atomic.Int64
	pushesPrev int64
}

// Run runs cfg's scenario and returns its result; progress goes to errw.
func Run(ctx context.Context, cfg *Config, errw io.Writer) (*Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, errw: errw}
	if cfg.Quiet {
		r.errw = io.Discard
	}
	if cfg.Backend != "" && cfg.Backend != "none" {
		be, err := backend.Start(backend.Options{Addr: cfg.Backend, Sequenced: true})
		if err != nil {
			return nil, err
		}
		defer be.Close()
		r.be = be
	}
	r.gets = r.backendGets
	if cfg.Scenario == Density {
		return runDensity(ctx, r)
	}
	return r.run(ctx)
}

func (r *runner) run(ctx context.Context) (*Result, error) {
	var res *Result
	var err error
	switch r.cfg.Scenario {
	case Ramp:
		res, err = r.ramp(ctx)
	case Throughput:
		res, err = r.throughput(ctx)
	case Handshake:
		res, err = r.handshake(ctx)
	case Push:
		res, err = r.push(ctx)
	case Storm:
		res, err = r.storm(ctx)
	case Fanout:
		res, err = r.fanout(ctx)
	}
	if res != nil {
		r.finish(res)
	}
	return res, err
}

// launch starts the generators for count connections in mode.
func (r *runner) launch(mode loadgen.Mode, count int, edit func(*loadgen.Config)) error {
	cfg := r.cfg
	base := loadgen.Config{
		Addr: cfg.target(), IDPrefix: cfg.IDPrefix, Total: count, Loops: cfg.Loops,
		Mode: mode, Interval: cfg.Interval, Size: cfg.Size, MaxInflight: cfg.Inflight,
		JSON: cfg.Payload == "json", Deflate: cfg.Deflate,
		Timeout: cfg.Timeout, Sources: sources(cfg.Sources),
		BackoffBase: cfg.BackoffBase, BackoffMax: cfg.BackoffMax, Seed: uint64(time.Now().UnixNano()),
	}
	if edit != nil {
		edit(&base)
	}
	limit := PerProcess
	if r.be != nil {
		limit -= 2000 // the mock backend's sockets share this process's limit
	}
	procs := cfg.Procs
	if procs <= 0 {
		procs = (count + limit - 1) / limit
	}
	procs = max(1, min(procs, max(count, 1)))
	r.procs = procs
	r.start = time.Now()
	r.nextSec = r.start.Add(time.Second)
	if procs == 1 {
		base.Count = count
		g, err := loadgen.Start(base)
		if err != nil {
			return err
		}
		r.f = localFleet{g}
		return nil
	}
	exe := cfg.Exe
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return fmt.Errorf("bench: finding wsbench for workers: %w", err)
		}
	}
	per := (count + procs - 1) / procs
	var cfgs []loadgen.Config
	for i := 0; i < procs; i++ {
		c := base
		c.First = i * per
		c.Count = min(per, count-c.First)
		c.Seed = base.Seed + uint64(i)*7919
		if c.Count > 0 {
			cfgs = append(cfgs, c)
		}
	}
	f, err := startWorkers(exe, cfgs)
	if err != nil {
		return err
	}
	r.f = f
	return nil
}

// poll collects the generators' state; once per second it appends a point
// to the series and prints the progress line.
func (r *runner) poll() loadgen.Totals {
	r.cur = r.f.collect(&r.secLat, &r.hs)
	r.maxHeld = max(r.maxHeld, r.cur.Held)
	now := time.Now()
	if now.Before(r.nextSec) {
		return r.cur
	}
	span := now.Sub(r.nextSec.Add(-time.Second)).Seconds()
	r.nextSec = r.nextSec.Add(time.Second)
	if r.nextSec.Before(now) {
		r.nextSec = now.Add(time.Second)
	}
	p := Point{
		Sec:    int(math.Round(now.Sub(r.start).Seconds())),
		Conns:  r.cur.Held,
		RPS:    float64(r.cur.Recv-r.prevSec.Recv) / span,
		Errors: r.cur.Errors() - r.prevSec.Errors(),
	}
	sec := &r.secLat
	if r.cfg.Scenario == Handshake {
		p.RPS = float64(r.cur.Cycles-r.prevSec.Cycles) / span
		sec = &r.hs
	}
	p.P50, p.P90 = float64(sec.Quantile(.5))/1000, float64(sec.Quantile(.9))/1000
	p.P99, p.Max = float64(sec.Quantile(.99))/1000, float64(sec.Max)/1000
	if g, ok := r.gets(); ok {
		d := g - r.prevGets
		if d < 0 {
			d = g // a restarted bridge starts its counters again
		}
		p.Gets = float64(d) / span
		r.prevGets = g
	}
	r.series = append(r.series, p)
	r.lat.Add(&r.secLat)
	r.secLat.Reset()
	r.prevSec = r.cur
	what := "msgs/s"
	switch r.cfg.Scenario {
	case Handshake:
		what = "upgrades/s"
	case Push:
		what = "pushes/s"
		if r.pushesOK != nil {
			ok := r.pushesOK.Load()
			p.RPS = float64(ok-r.pushesPrev) / span
			r.pushesPrev = ok
		}
	}
	line := fmt.Sprintf("[%s %4ds] conns %d/%d  %s %.0f  p99 %.2fms  errors %d", r.cfg.Scenario, p.Sec,
		r.cur.Held, r.cfg.Conns, what, p.RPS, p.P99, r.cur.Errors())
	if p.Gets > 0 || r.cfg.Scenario == Storm {
		line += fmt.Sprintf("  backend GET/s %.0f", p.Gets)
	}
	fmt.Fprintln(r.errw, line)
	return r.cur
}

// until polls every 50 ms until cond holds, deadline passes or ctx ends.
func (r *runner) until(ctx context.Context, deadline time.Time, cond func(loadgen.Totals) bool) bool {
	for {
		t := r.poll()
		if cond != nil && cond(t) {
			return true
		}
		if !time.Now().Before(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// allHeld waits (up to the connect budget) for count open connections.
func (r *runner) allHeld(ctx context.Context, count int) error {
	budget := r.cfg.Timeout + time.Duration(count/500)*time.Second + 10*time.Second
	ok := r.until(ctx, time.Now().Add(budget), func(t loadgen.Totals) bool { return t.Held >= int64(count) })
	if !ok {
		return fmt.Errorf("bench: only %d of %d connections open after %v (errors %d)", r.cur.Held, count, budget, r.cur.Errors())
	}
	return nil
}

// end stops the generators and folds the last latencies in.
func (r *runner) end(res *Result) error {
	r.f.quiesce()
	r.poll()
	res.Held = r.cur.Held
	err := r.f.stop(3 * time.Second)
	t := r.f.collect(&r.secLat, &r.hs)
	r.lat.Add(&r.secLat)
	r.secLat.Reset()
	// Counters from the final reports; Held is the value before stopping.
	held := res.Held
	r.cur = t
	r.cur.Held = held
	return err
}

func (r *runner) newResult() *Result {
	return &Result{Scenario: r.cfg.Scenario, Start: r.start.UTC().Format(time.RFC3339), Conns: r.cfg.Conns, Size: r.cfg.Size, Violations: -1}
}

// finish fills the common fields.
func (r *runner) finish(res *Result) {
	t := r.cur
	res.Procs = r.procs
	res.MaxHeld = r.maxHeld
	res.Sent, res.Recv = t.Sent, t.Recv
	res.WireSent, res.WireRecv = t.WireSent, t.WireRecv
	res.RTT = summarize(&r.lat)
	res.Upgrade = summarize(&r.hs)
	res.Upgrades = t.Opened
	res.Errors = t.Errors() + res.PushErrors
	res.ErrorKinds = map[string]int64{"connect": t.ConnectErr, "refused": t.Refused, "closed": t.Closed, "timeout": t.Timeouts}
	if res.PushErrors > 0 {
		res.ErrorKinds["push"] = res.PushErrors
	}
	if t.Code1012+t.Code1013+t.CodeOther+t.Status503+t.Dropped > 0 {
		res.Closes = map[string]int64{"1012": t.Code1012, "1013": t.Code1013, "other": t.CodeOther, "503": t.Status503, "dropped": t.Dropped}
	}
	if r.be != nil {
		// DELETEs trail the closes; give them a moment before judging.
		_ = backend.Wait(5*time.Second, func() bool { return r.be.Open() == 0 })
		res.Violations = r.be.Violations.Load()
	}
	res.Series = r.series
}

func (r *runner) ramp(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	if err := r.launch(loadgen.Periodic, cfg.Conns, func(c *loadgen.Config) {
		c.OpenOver = cfg.Ramp
		c.Reconnect = true
	}); err != nil {
		return nil, err
	}
	res := r.newResult()
	rampEnd := r.start.Add(cfg.Ramp)
	r.until(ctx, rampEnd, nil)
	recv0, t0 := r.cur.Recv, time.Now()
	r.until(ctx, rampEnd.Add(cfg.Duration), nil)
	res.Seconds = time.Since(t0).Seconds()
	recv := r.cur.Recv
	err := r.end(res)
	res.MsgsPerSec = float64(recv-recv0) / res.Seconds
	return res, err
}

func (r *runner) throughput(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	if err := r.launch(loadgen.ClosedLoop, cfg.Conns, nil); err != nil {
		return nil, err
	}
	res := r.newResult()
	if err := r.allHeld(ctx, cfg.Conns); err != nil {
		_ = r.end(res)
		return res, err
	}
	r.lat.Reset() // warm-up latencies out
	r.secLat.Reset()
	recv0, t0 := r.cur.Recv, time.Now()
	r.until(ctx, t0.Add(cfg.Duration), nil)
	res.Seconds = time.Since(t0).Seconds()
	recv := r.cur.Recv
	err := r.end(res)
	res.MsgsPerSec = float64(recv-recv0) / res.Seconds
	return res, err
}

func (r *runner) handshake(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	if err := r.launch(loadgen.Handshake, cfg.Conns, nil); err != nil {
		return nil, err
	}
	res := r.newResult()
	t0 := time.Now()
	r.until(ctx, t0.Add(cfg.Duration), nil)
	res.Seconds = time.Since(t0).Seconds()
	cycles := r.cur.Cycles
	err := r.end(res)
	res.UpgradesPerSec = float64(cycles) / res.Seconds
	return res, err
}

func (r *runner) push(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	if err := r.launch(loadgen.Hold, cfg.Conns, func(c *loadgen.Config) { c.Reconnect = true }); err != nil {
		return nil, err
	}
	res := r.newResult()
	if err := r.allHeld(ctx, cfg.Conns); err != nil {
		_ = r.end(res)
		return res, err
	}
	r.lat.Reset()
	r.secLat.Reset()
	p := newPusher(cfg)
	r.pushesOK = &p.ok
	t0 := time.Now()
	done := make(chan struct{})
	go func() {
		p.run(ctx, t0.Add(cfg.Duration))
		close(done)
	}()
	r.until(ctx, t0.Add(cfg.Duration+30*time.Second), func(loadgen.Totals) bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	})
	<-done
	res.Seconds = time.Since(t0).Seconds()
	// Deliveries trail the 200s by a little.
	r.until(ctx, time.Now().Add(2*time.Second), func(t loadgen.Totals) bool { return t.Recv >= p.ok.Load() })
	err := r.end(res)
	res.Pushes = p.ok.Load()
	res.PushErrors = p.fail.Load()
	res.PushesPerSec = float64(res.Pushes) / res.Seconds
	res.MsgsPerSec = float64(r.cur.Recv) / res.Seconds
	if p.firstErr.Load() != nil {
		fmt.Fprintf(r.errw, "push: first error: %v\n", *p.firstErr.Load())
	}
	return res, err
}

func (r *runner) storm(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	if err := r.launch(loadgen.Hold, cfg.Conns, func(c *loadgen.Config) {
		c.Reconnect = true
		if cfg.Inflight <= 0 {
			c.MaxInflight = 4096 // the point is the crowd
		}
	}); err != nil {
		return nil, err
	}
	res := r.newResult()
	if err := r.allHeld(ctx, cfg.Conns); err != nil {
		_ = r.end(res)
		return res, err
	}
	opened0, lost0 := r.cur.Opened, r.cur.Closed+r.cur.Dropped
	gets0, _ := r.gets()
	trigger := time.Now()
	var cmdDone atomic.Bool
	fmt.Fprintf(r.errw, "[storm] all %d connected; ", cfg.Conns)
	if cfg.RestartCmd != "" {
		fmt.Fprintf(r.errw, "running %q\n", cfg.RestartCmd)
		cctx, cancel := context.WithTimeout(ctx, cfg.Duration)
		cmd := exec.CommandContext(cctx, "sh", "-c", cfg.RestartCmd)
		cmd.Stdout, cmd.Stderr = r.errw, r.errw
		if err := cmd.Start(); err != nil {
			cancel()
			_ = r.end(res)
			return res, fmt.Errorf("bench: -restart-cmd: %w", err)
		}
		go func() {
			if err := cmd.Wait(); err != nil {
				fmt.Fprintf(r.errw, "[storm] -restart-cmd: %v\n", err)
			}
			cancel()
			cmdDone.Store(true)
		}()
	} else {
		fmt.Fprintln(r.errw, "dropping them all")
		r.f.drop()
		cmdDone.Store(true)
	}
	failed0 := r.cur.ConnectErr + r.cur.Refused + r.cur.Timeouts
	// All back: the restart is over, every connection lost since the
	// trigger has been opened again, and all are held.
	res.StormComplete = r.until(ctx, trigger.Add(cfg.Duration), func(t loadgen.Totals) bool {
		lost := t.Closed + t.Dropped - lost0
		return cmdDone.Load() && lost > 0 && t.Opened-opened0 >= lost && t.Held >= int64(cfg.Conns)
	})
	// The series after the trigger shows GETs/s settling.
	if res.StormComplete {
		res.StormSeconds = time.Unix(0, r.cur.LastReopen).Sub(trigger).Seconds()
	} else {
		res.StormSeconds = time.Since(trigger).Seconds()
	}
	res.Seconds = time.Since(trigger).Seconds()
	for _, p := range r.series {
		res.StormGetsMax = max(res.StormGetsMax, p.Gets)
	}
	if g, ok := r.gets(); ok {
		res.StormGets = g - gets0
		if res.StormGets < 0 {
			res.StormGets = g // the bridge restarted: its counter did too
		}
	}
	err := r.end(res)
	if failed := r.cur.ConnectErr + r.cur.Refused + r.cur.Timeouts - failed0; failed > 0 {
		fmt.Fprintf(r.errw, "[storm] %d failed attempts during the storm (retried with backoff)\n", failed)
	}
	return res, err
}

// backendGets reads the backend's GET count: from the in-process mock, or
// the bridge's /metrics.
func (r *runner) backendGets() (int64, bool) {
	if r.be != nil {
		return r.be.Gets.Load(), true
	}
	if r.cfg.Scenario != Storm || r.cfg.Admin == "" {
		return 0, false
	}
	return scrapeSum(r.cfg.Admin, `wsbridge_backend_requests_total{method="GET"`)
}

// ErrIncomplete marks a run that did not reach its target.
var ErrIncomplete = errors.New("bench: run incomplete")
