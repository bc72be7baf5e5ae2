package bench

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Scenarios wsbench runs.
const (
	Ramp       = "ramp"
	Throughput = "throughput"
	Handshake  = "handshake"
	Push       = "push"
	Storm      = "storm"
	Density    = "density"
	Fanout     = "fanout"
)

// PerProcess is how many client connections one process holds at most: the
// open-files hard limit here is 20,000 and a process needs a few hundred
// descriptors of its own (and the in-process mock backend's sockets).
const PerProcess = 19000

// Config is one wsbench run; the zero value of a field means its default.
type Config struct {
	Scenario string
	URL      string // ws://host:port of the bridge; ClientIds are appended
	IDPrefix string // ClientId prefix
	Backend  string // start the mock backend on this address; "none" = do not
	Admin    string // bridge admin host:port (push, storm metrics, density); fanout: a comma-separated list, one per bridge

	Conns    int           // connections (ramp, throughput, push, storm, density) or slots (handshake)
	Ramp     time.Duration // ramp: open Conns over this
	Rate     float64       // ramp: connections per second (overrides Ramp); push: pushes per second (0 = closed loop)
	Duration time.Duration // how long to measure (ramp: after the ramp)
	Interval time.Duration // ramp: per-connection message period
	Size     int           // message payload bytes
	Sources  int           // source addresses 127.0.x.y to spread over
	Procs    int           // processes; 0 = ceil(Conns/PerProcess), 1 = this process only
	Inflight int           // connects in progress per loop; push: concurrent admin POSTs
	Timeout  time.Duration // connect+upgrade and reply timeout
	Loops    int           // event loops per process; 0 = GOMAXPROCS

	RestartCmd  string        // storm: shell command that restarts the bridge (else wsbench drops every connection)
	BackoffBase time.Duration // storm, ramp: reconnect backoff
	BackoffMax  time.Duration

	JSON       bool   // only the JSON line on stdout (table to stderr)
	CSV        string // write the per-second series here
	Quiet      bool   // no progress line
	Exe        string // wsbench binary for worker processes; empty = os.Executable
	BridgeBin  string // density: wsbridge binary to start
	BridgeArgs string // density: extra wsbridge flags
	TConns     int    // density: closed-loop connections for the CPU run
	FanoutPush bool   // fanout: one admin push per connection instead of one channel publish
	Payload    string // message padding: "x" or "json" (JSON-like records)
	Deflate    bool   // clients offer permessage-deflate and send compressed messages
}

func (c *Config) flags(fs *flag.FlagSet) {
	fs.StringVar(&c.Scenario, "scenario", c.Scenario, "ramp, throughput, handshake, push, storm, density or fanout (or give it as the first argument)")
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:7001", "bridge WebSocket `URL`; the ClientId (prefix + index) is appended")
	fs.StringVar(&c.IDPrefix, "prefix", "b", "ClientId prefix")
	fs.StringVar(&c.Backend, "backend", "none", "start the mock backend in-process on this `address` (e.g. 127.0.0.1:8000), or none")
	fs.StringVar(&c.Admin, "admin", "127.0.0.1:7002", "bridge admin `address` (push API, /metrics); fanout: a comma-separated list, one per bridge (publishes go to the first, bridge CPU is summed over all)")
	fs.IntVar(&c.Conns, "conns", 0, "connections (handshake: connects in flight); 0 = the scenario's default")
	fs.DurationVar(&c.Ramp, "ramp", 60*time.Second, "ramp: open -conns over this long")
	fs.Float64Var(&c.Rate, "rate", 0, "ramp: connections per second (overrides -ramp); push: pushes per second (0 = as fast as possible); fanout: messages to all per second (0 = 10)")
	fs.DurationVar(&c.Duration, "duration", 0, "measurement time (ramp: after the ramp; storm: longest wait for all to be back); 0 = the scenario's default")
	fs.DurationVar(&c.Interval, "interval", 10*time.Second, "ramp: one message per connection this often")
	fs.IntVar(&c.Size, "size", 64, "message payload `bytes` (at least the 30-byte timestamp)")
	fs.IntVar(&c.Sources, "sources", 64, "source addresses 127.0.x.y to bind (0 = let the kernel choose)")
	fs.IntVar(&c.Procs, "procs", 0, "processes (0 = one per 19,000 connections, 1 = no workers)")
	fs.IntVar(&c.Inflight, "inflight", 0, "connects in progress per event loop (push: concurrent admin POSTs); 0 = default")
	fs.DurationVar(&c.Timeout, "timeout", 10*time.Second, "connect+upgrade and reply timeout")
	fs.IntVar(&c.Loops, "loops", 0, "event loops per process (0 = GOMAXPROCS)")
	fs.StringVar(&c.RestartCmd, "restart-cmd", "", "storm: `command` (sh -c) that restarts the bridge; empty = wsbench drops every connection at once")
	fs.DurationVar(&c.BackoffBase, "backoff-base", 500*time.Millisecond, "reconnect backoff: first retry's upper bound")
	fs.DurationVar(&c.BackoffMax, "backoff-max", 30*time.Second, "reconnect backoff: cap")
	fs.BoolVar(&c.JSON, "json", false, "print only the JSON result line on stdout (the table goes to stderr)")
	fs.StringVar(&c.CSV, "csv", "", "write the per-second series (seconds,connections,rps,...) to this `file`")
	fs.BoolVar(&c.Quiet, "quiet", false, "no live progress line")
	fs.StringVar(&c.BridgeBin, "bridge", "", "density: wsbridge `binary` to start (default: next to wsbench, then $PATH)")
	fs.StringVar(&c.BridgeArgs, "bridge-args", "", "density: extra wsbridge flags, space-separated")
	fs.BoolVar(&c.FanoutPush, "fanout-push", false, "fanout: send each message as one admin push per connection (today's way) instead of one channel publish")
	fs.IntVar(&c.TConns, "tconns", 200, "density: closed-loop connections for the messages-per-CPU-second run")
	fs.StringVar(&c.Payload, "payload", "x", "message padding after the sequence number and timestamp: x, or json (JSON-like records that compress as API traffic does)")
	fs.BoolVar(&c.Deflate, "deflate", false, "clients offer permessage-deflate, send every message compressed and inflate compressed replies (give the bridge -deflate too: -bridge-args for density)")
}

// defaults fills in per-scenario defaults.
func (c *Config) defaults() error {
	type d struct {
		conns    int
		duration time.Duration
	}
	defs := map[string]d{
		Ramp:       {250000, 60 * time.Second},
		Throughput: {100, 10 * time.Second},
		Handshake:  {100, 10 * time.Second},
		Push:       {1000, 10 * time.Second},
		Storm:      {10000, 60 * time.Second},
		Density:    {15000, 10 * time.Second},
		Fanout:     {1000, 10 * time.Second},
	}
	def, ok := defs[c.Scenario]
	if !ok {
		return fmt.Errorf("bench: unknown scenario %q (want ramp, throughput, handshake, push, storm, density or backend)", c.Scenario)
	}
	if c.Conns <= 0 {
		c.Conns = def.conns
	}
	if c.Duration <= 0 {
		c.Duration = def.duration
	}
	if c.Scenario == Ramp && c.Rate > 0 {
		c.Ramp = time.Duration(float64(c.Conns) / c.Rate * float64(time.Second))
	}
	if c.Size < 0 {
		c.Size = 0
	}
	if admins := c.admins(); len(admins) > 1 && c.Scenario != Fanout {
		return fmt.Errorf("bench: -admin %q: several addresses only for fanout", c.Admin)
	} else if slices.Contains(admins, "") {
		return fmt.Errorf("bench: -admin %q: an empty address in the list", c.Admin)
	}
	if c.Scenario != Density {
		u, err := url.Parse(c.URL)
		if err != nil || u.Scheme != "ws" {
			return fmt.Errorf("bench: -url %q: want ws://host:port", c.URL)
		}
		if _, err := netip.ParseAddrPort(u.Host); err != nil {
			return fmt.Errorf("bench: -url %q: want a numeric IPv4 host:port: %w", c.URL, err)
		}
	}
	return nil
}

// admins lists -admin's addresses (fanout takes one per bridge).
func (c *Config) admins() []string {
	if c.Admin == "" {
		return nil
	}
	out := strings.Split(c.Admin, ",")
	for i := range out {
		out[i] = strings.TrimSpace(out[i])
	}
	return out
}

// target is the bridge's address from -url.
func (c *Config) target() netip.AddrPort {
	u, _ := url.Parse(c.URL)
	ap, _ := netip.ParseAddrPort(u.Host)
	return ap
}

// sources lists the -sources addresses: 127.0.1.1, 127.0.1.2, ... (each
// third octet holds 254).
func sources(n int) []netip.Addr {
	out := make([]netip.Addr, 0, n)
	for i := range n {
		out = append(out, netip.AddrFrom4([4]byte{127, 0, byte(1 + i/254), byte(1 + i%254)}))
	}
	return out
}

const usage = `wsbench: load generator for wsbridge

usage:
  wsbench <scenario> [flags]        scenario: ramp, throughput, handshake, push, storm, density
  wsbench backend -listen addr      run the mock API backend (GET ok, POST echo, DELETE ok)

examples:
  wsbridge -listen 127.0.0.1:7001 -backend http://127.0.0.1:8000/ &
  wsbench throughput -backend 127.0.0.1:8000 -conns 200 -duration 10s
  wsbench ramp -backend 127.0.0.1:8000 -conns 20000 -ramp 20s -interval 10s -duration 30s -csv ramp.csv
  wsbench push -backend 127.0.0.1:8000 -admin 127.0.0.1:7002 -conns 5000 -duration 10s
  wsbench density -conns 15000
  wsbench fanout -backend 127.0.0.1:8000 -admin 127.0.0.1:7002 -conns 10000 -rate 20 -duration 10s [-fanout-push]
  wsbench fanout -backend 127.0.0.1:8000 -admin 127.0.0.1:7201,127.0.0.1:7202 -conns 30000 -procs 2 -rate 1  (clustered bridges)

flags:
`

// parse reads the command line: an optional scenario word, then flags.
func parse(args []string, stderr io.Writer) (*Config, error) {
	c := &Config{}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		c.Scenario, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("wsbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.flags(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	if c.Scenario == "" {
		fs.Usage()
		return nil, errors.New("bench: no scenario")
	}
	return c, c.defaults()
}
