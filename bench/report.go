package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// Main is wsbench's whole command line; it returns the exit code.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == WorkerArg {
		if len(args) != 2 {
			fmt.Fprintln(stderr, "wsbench: worker: want one config argument")
			return 2
		}
		if err := Worker(args[1], stdin, stdout); err != nil {
			fmt.Fprintln(stderr, "wsbench worker:", err)
			return 1
		}
		return 0
	}
	if len(args) > 0 && args[0] == "backend" {
		return mainBackend(args[1:], stderr)
	}
	cfg, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsbench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := Run(ctx, cfg, stderr)
	if res != nil {
		if werr := Write(res, cfg, stdout, stderr); werr != nil {
			fmt.Fprintln(stderr, "wsbench:", werr)
			return 1
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "wsbench:", err)
		return 1
	}
	return 0
}

// Write prints the table and the JSON line (see Config.JSON) and the CSV.
func Write(res *Result, cfg *Config, stdout, stderr io.Writer) error {
	table := stdout
	if cfg.JSON {
		table = stderr
	}
	WriteTable(table, res)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(stdout, "%s\n", b); err != nil {
		return err
	}
	if cfg.CSV != "" {
		f, err := os.Create(cfg.CSV)
		if err != nil {
			return err
		}
		if err := WriteCSV(f, res.Series); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	return nil
}

// WriteCSV writes the per-second series, the shape of ws2api's docs/*.csv
// (seconds, connections, rps) plus p99, errors, backend GETs/s and, last so
// the first columns keep their places, the second's p50, p90 and max.
func WriteCSV(w io.Writer, series []Point) error {
	if _, err := fmt.Fprintln(w, "seconds,connections,rps,p99_ms,errors,backend_gets_per_sec,p50_ms,p90_ms,max_ms"); err != nil {
		return err
	}
	for _, p := range series {
		if _, err := fmt.Fprintf(w, "%d,%d,%.0f,%.3f,%d,%.0f,%.3f,%.3f,%.3f\n",
			p.Sec, p.Conns, p.RPS, p.P99, p.Errors, p.Gets, p.P50, p.P90, p.Max); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable prints a result for people.
func WriteTable(w io.Writer, r *Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t"+f+"\n", append([]any{k}, a...)...) }
	lat := func(l Latency) string {
		if l.N == 0 {
			return "-"
		}
		return fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms  (n=%d)", l.P50, l.P90, l.P99, l.Max, l.N)
	}
	row("scenario", "%s  (%d process(es), started %s)", r.Scenario, r.Procs, r.Start)
	row("window", "%.1f s", r.Seconds)
	row("connections", "%d held at end, %d max, %d asked", r.Held, r.MaxHeld, r.Conns)
	switch r.Scenario {
	case Handshake:
		row("upgrades/s", "%.0f", r.UpgradesPerSec)
	case Push:
		row("pushes/s", "%.0f  (%d ok, %d failed, %d delivered)", r.PushesPerSec, r.Pushes, r.PushErrors, r.Recv)
		row("delivery", "%s", lat(r.RTT))
	case Storm:
		state := "all back"
		if !r.StormComplete {
			state = "NOT all back"
		}
		row("storm", "%s after %.2f s; %d backend GETs, peak %.0f GET/s", state, r.StormSeconds, r.StormGets, r.StormGetsMax)
	case Density:
	default:
		row("messages/s", "%.0f  (%d sent, %d received, %d B each)", r.MsgsPerSec, r.Sent, r.Recv, r.Size)
		row("round trip", "%s", lat(r.RTT))
	}
	row("upgrade", "%s", lat(r.Upgrade))
	keys := make([]string, 0, len(r.ErrorKinds))
	for k := range r.ErrorKinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, r.ErrorKinds[k]))
	}
	row("errors", "%d  (%s)", r.Errors, strings.Join(parts, ", "))
	if len(r.Closes) > 0 {
		row("closes", "%v", r.Closes)
	}
	if r.Violations >= 0 {
		row("backend violations", "%d", r.Violations)
	}
	if f := r.Fanout; f != nil {
		row("fan-out", "%s: %d messages to %d conns on %d bridge(s), %d complete; %d deliveries, %.2f bridge CPU-s: %.0f deliveries per CPU-second",
			f.Mode, f.Messages, r.Conns, f.Bridges, f.Complete, f.Deliveries, f.CPU, f.DeliveriesCPU)
		row("to the last", "p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms  (n=%d)", f.Last.P50, f.Last.P90, f.Last.P99, f.Last.Max, f.Last.N)
	}
	if d := r.Density; d != nil {
		row("bridge RSS", "%.1f MiB idle → %.1f MiB with %d conns: %.0f B/conn", mib(d.RSSBefore), mib(d.RSSAfter), d.Conns, d.RSSPerConn)
		if d.RSSSettled > 0 {
			row("settled", "%.1f MiB %s later: %.0f B/conn", mib(d.RSSSettled), DensitySettle, d.RSSSettledPer)
		}
		row("bridge heap", "%.1f MiB → %.1f MiB: %.0f B/conn", mib(d.HeapBefore), mib(d.HeapAfter), d.HeapPerConn)
		row("bridge CPU", "%.2f s to accept %d conns", d.CPUConnect, d.Conns)
		row("throughput", "%d conns: %.0f msgs/s, %.2f bridge CPU-s: %.0f msgs per CPU-second", d.TConns, d.MsgsPerSec, d.CPUThroughput, d.MsgsPerCPUSec)
		row("round trip", "p50 %.2f  p90 %.2f  p99 %.2f  max %.2f ms  (n=%d)", d.RTT.P50, d.RTT.P90, d.RTT.P99, d.RTT.Max, d.RTT.N)
		if d.WirePerMsgIn > 0 {
			row("on the wire", "%.0f B per message in, %.0f B per reply out (payload bytes)", d.WirePerMsgIn, d.WirePerMsgOut)
		}
	}
	tw.Flush()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// mainBackend runs the mock backend until a signal.
func mainBackend(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("wsbench backend", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8000", "`address` to serve on")
	seq := fs.Bool("sequenced", true, "check that messages starting with a number arrive in order per connection")
	every := fs.Duration("stats", 10*time.Second, "print counters this often (0 = only at exit)")
	stall := fs.Bool("stall-posts", false, "never answer POSTs (a stalled backend): hold each until the bridge gives up")
	delay := fs.Duration("delay", 0, "take this long over every call, like a framework that boots per request (0 = answer at once)")
	workers := fs.Int("workers", 0, "with -delay: serve at most this many calls at once, like a PHP-FPM pool; more wait in line (0 = no limit)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	opts := backend.Options{Addr: *listen, Sequenced: *seq}
	if *delay > 0 {
		var pool chan struct{}
		if *workers > 0 {
			pool = make(chan struct{}, *workers)
		}
		opts.Hook = func(*fasthttp.RequestCtx, *backend.Call) bool {
			if pool != nil {
				pool <- struct{}{}
				defer func() { <-pool }()
			}
			time.Sleep(*delay)
			return false
		}
	}
	if *stall {
		opts.Hook = func(ctx *fasthttp.RequestCtx, c *backend.Call) bool {
			if c.Method != fasthttp.MethodPost {
				return false
			}
			<-ctx.Done() // the server shutting down; the bridge times out first
			return true
		}
	}
	be, err := backend.Start(opts)
	if err != nil {
		fmt.Fprintln(stderr, "wsbench backend:", err)
		return 1
	}
	fmt.Fprintf(stderr, "wsbench backend: serving %s (GET ok, POST echo, DELETE ok)\n", be.URL)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	stats := func() {
		fmt.Fprintf(stderr, "wsbench backend: GET %d POST %d DELETE %d open %d violations %d %s\n",
			be.Gets.Load(), be.Posts.Load(), be.Deletes.Load(), be.Open(), be.Violations.Load(), be.LastViolation())
	}
	for {
		select {
		case <-tick:
			stats()
		case <-sig:
			stats()
			_ = be.Close()
			if be.Violations.Load() > 0 {
				return 1
			}
			return 0
		}
	}
}
