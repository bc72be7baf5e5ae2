package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wsbridge/wsbridge/bridge/journal"
	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/engine"
)

// options is the whole command line.
type options struct {
	engine          engine.Config
	backend         string
	admin           string
	adminToken      string
	backendMaxConns int
	backendPipeline int
	backendAdapt    bool
	backendTimeout  time.Duration
	pprof           bool
	trimMemory      bool
	cpuProfile      string
	memProfile      string
	logLevel        string
	logFormat       string
	demo            bool
	signer          *sign.Signer // -sign-key; nil = calls unsigned

	// journalDir is -journal (empty = off); journalSync and journalEvery
	// are -journal-sync parsed (journal.ParseSync).
	journalDir   string
	journalSync  journal.Sync
	journalEvery time.Duration
	// Batched calls (-backend-batch-url; bridge/batch.go).
	batchURL   string
	batchMax   int
	batchDelay time.Duration

	// backendStuckAfter and backendStuckConns: see bridge.Config StuckAfter
	// and MaxStuck. backendStuckConns < 0 is worked out at start from the
	// open-files limit (stuckConns).
	backendStuckAfter time.Duration
	backendStuckConns int

	cluster string // -cluster: NATS URLs; empty = this node alone
	nodeID  string // -node-id
}

// byteSize is a flag value in bytes that also takes KiB/MiB/GiB (or k/m/g).
type byteSize struct{ p *int64 }

func (b byteSize) String() string {
	if b.p == nil {
		return ""
	}
	return strconv.FormatInt(*b.p, 10)
}

func (b byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*b.p = n
	return nil
}

func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	lower := strings.ToLower(s)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"b", 1}} {
		if strings.HasSuffix(lower, u.suffix) {
			mult = u.mult
			s = strings.TrimSpace(s[:len(s)-len(u.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want bytes, or a number with KiB, MiB or GiB", s)
	}
	return n * mult, nil
}

// parseOptions reads env (WSBRIDGE_<FLAG_IN_CAPS>) and then args, so flags
// override the environment.
func parseOptions(args, env []string) (*options, error) {
	o := &options{}
	e := &o.engine
	fs := flag.NewFlagSet("wsbridge", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&e.Listen, "listen", ":7001", "WebSocket listener `address`")
	fs.StringVar(&o.backend, "backend", "http://127.0.0.1:8000/", "backend base `URL`; the ClientId is appended")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:7002", "admin `address`: push API, /metrics, /healthz, /readyz, pprof; keep it off the internet")
	fs.StringVar(&o.adminToken, "admin-token", "", "if set, admin calls need \"Authorization: Bearer <token>\" (not /healthz, /readyz)")
	// 1024 sockets keep a PHP-FPM or Puma pool busy without queueing in
	// the kernel; they count against the same open-files limit as clients.
	fs.IntVar(&o.backendMaxConns, "backend-max-conns", 1024, "most sockets to the backend; more calls queue")
	// 16 (adaptive): about twice the round trips per CPU second of one
	// call per socket against a fast backend, the same against a PHP-FPM-
	// like pool (never pipelined), the healthy clients' rate kept through a
	// stall (TestTroubleStuckIDs), and an open-loop tail on a saturated box
	// like one call per socket's (BENCHMARKS.md, eighth session).
	fs.IntVar(&o.backendPipeline, "backend-pipeline", 16, "most requests one backend connection may carry at once (HTTP/1.1 pipelining; 1 = off). With -backend-adapt only while the backend answers fast, on the few sockets it needs, and only for connections whose last message was answered fast; see docs/tuning.md")
	fs.BoolVar(&o.backendAdapt, "backend-adapt", true, "with -backend-pipeline > 1: find how many of -backend-max-conns sockets the backend can use, and pipeline on them only while it answers fast (false: every socket up to -backend-max-conns, and -backend-pipeline whenever all are busy)")
	fs.DurationVar(&o.backendTimeout, "backend-timeout", 60*time.Second, "per backend request; also bounds how long a reconnect waits for the previous DELETE")
	// 250ms: far above a healthy API call, and short enough that the
	// messages queued behind a stall wait well under a second. A slow call
	// is not cut short, it only moves to a socket of its own.
	fs.DurationVar(&o.backendStuckAfter, "backend-stuck-after", 250*time.Millisecond, "a backend call in flight this long is stuck: it stops counting against -backend-max-conns, so others get a socket (see -backend-stuck-conns)")
	// 4096 stuck calls (one slow endpoint hit by thousands of clients) cost
	// 4096 file descriptors and some 100 MiB at most.
	fs.IntVar(&o.backendStuckConns, "backend-stuck-conns", -1, "most stuck backend calls held on extra sockets above -backend-max-conns (0 = none: stuck calls hold -backend-max-conns; -1 = 4096, or less if the open-files limit is tight: what -max-conns leaves, else an eighth of what -backend-max-conns leaves)")
	fs.IntVar(&e.MaxConns, "max-conns", 0, "WebSocket connections; above it upgrades get 503 and /readyz 503 (0 = no limit)")
	e.MaxMessage = 1 << 20
	fs.Var(byteSize{&e.MaxMessage}, "max-message", "largest message in `bytes` (KiB/MiB suffixes work); bigger closes with 1009")
	fs.BoolVar(&e.Deflate, "deflate", false, "accept permessage-deflate (RFC 7692, no context takeover on either side): compressed client messages are inflated (over -max-message closes 1009), and messages to the client of -deflate-min bytes or more go compressed")
	deflateMin := int64(256)
	fs.Var(byteSize{&deflateMin}, "deflate-min", "with -deflate, messages to the client shorter than this many `bytes` go plain (0 = compress every one)")
	fs.IntVar(&e.DeflateLevel, "deflate-level", 1, "with -deflate, compression level from 1 (fastest) to 9 (smallest)")
	var maxOutbound int64
	fs.Var(byteSize{&maxOutbound}, "max-outbound", "`bytes` buffered towards one slow client before it is closed with 1013 (0 = 2 × max-message + 64 KiB)")
	// 30s keeps NAT and proxy mappings alive (most idle out at 60s or more)
	// while costing an idle client one small frame per half minute.
	fs.DurationVar(&e.PingInterval, "ping-interval", 30*time.Second, "ping idle clients this often (0 disables heartbeats)")
	fs.DurationVar(&e.PongTimeout, "pong-timeout", 10*time.Second, "close (4002) a client silent this long after a ping")
	fs.DurationVar(&e.HandshakeTimeout, "handshake-timeout", 10*time.Second, "close clients that have not sent a whole upgrade request by then")
	fs.Float64Var(&e.AcceptRate, "accept-rate", 0, "upgrades per second admitted before the backend is asked (0 = off)")
	fs.IntVar(&e.AcceptBurst, "accept-burst", 0, "upgrades admitted at once above -accept-rate (0 = one second's worth)")
	maxPending := -1
	fs.IntVar(&maxPending, "max-pending-upgrades", -1, "upgrades waiting for the backend's GET at once; more get 503 with Retry-After (-1 = half of -backend-max-conns, × -backend-pipeline without -backend-adapt; 0 = no limit)")
	// Off by default: behind a balancer that is not in -trusted-proxies
	// every client has the balancer's address.
	fs.IntVar(&e.MaxConnsPerIP, "max-conns-per-ip", 0, "WebSocket connections per client address (the socket's peer, or what a -trusted-proxies balancer says); more get 429 with Retry-After (0 = no limit; for deployments without a balancer, or with one in -trusted-proxies)")
	maxPendingPerIP := -1
	fs.IntVar(&maxPendingPerIP, "max-pending-per-ip", -1, "upgrades per client address waiting for the backend's GET at once; more get 429 with Retry-After (-1 = a quarter of -max-pending-upgrades when -max-conns-per-ip is set, else no limit; 0 = no limit)")
	fs.DurationVar(&e.DrainTimeout, "drain-timeout", 30*time.Second, "on SIGTERM/SIGINT, how long clients get to leave (closed with 1012 over this window); after it the rest are closed at once while queued POSTs and DELETEs are still sent; a second signal stops at once")
	fs.DurationVar(&e.DrainDelay, "drain-delay", 0, "on SIGTERM, wait this long (readiness 503, listener stopped) before closing clients: the balancer's health-check detection time, e.g. 2s (0 = start at once)")
	// 64 channels is more than a chat or a dashboard needs, and bounds
	// what one connection's backend replies can make it cost (about 100
	// bytes a subscription).
	fs.IntVar(&e.MaxChannels, "max-channels", 64, "channels one connection may be subscribed to; a subscription past it is refused (ignored in a reply header, 409 on the admin API)")
	fs.BoolVar(&e.ReusePort, "reuseport", false, "SO_REUSEPORT: zero-downtime restarts and several processes on one port")
	fs.IntVar(&e.Loops, "loops", 0, "event loops (0 = one per CPU)")
	var origins, proxies string
	fs.StringVar(&origins, "allow-origin", "", "comma-separated Origin allow-list (scheme://host[:port]); others get 403 (empty = any)")
	fs.StringVar(&proxies, "trusted-proxies", "", "comma-separated CIDRs (or addresses) of balancers whose X-Forwarded-For, and whose PROXY protocol header (v1 or v2, optional per connection), give the client's address; a PROXY header from any other peer gets 400")
	fs.BoolVar(&o.pprof, "pprof", false, "serve /debug/pprof/ on the admin address")
	fs.BoolVar(&o.trimMemory, "trim-memory", true, "after the heap has grown (a reconnect storm), return what the idle connections do not need to the OS once the bridge is quiet")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile to `file` (ws2api compatible)")
	fs.StringVar(&o.memProfile, "memprofile", "", "write a heap profile to `file` at exit (ws2api compatible)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "json", "json or console")
	fs.BoolVar(&o.demo, "demo", false, "also start a built-in echo backend and point -backend at it")
	// Batching is off by default: it changes what the backend must parse.
	// 100 messages keep one batch's handling short in a PHP request (and
	// its failure small); 1ms is well under a typical backend call, so a
	// message waits for its batch less than for its answer.
	fs.StringVar(&o.batchURL, "backend-batch-url", "", "send the messages of many connections together in one POST to this `URL` (on the -backend host; format in docs/protocol.md \"Batched calls\"; empty = one POST per message)")
	fs.IntVar(&o.batchMax, "backend-batch-max", 100, "most messages in one batch (with -backend-batch-url); a batch also leaves at 1 MiB")
	fs.DurationVar(&o.batchDelay, "backend-batch-delay", time.Millisecond, "how long a batch waits for more messages after its first (with -backend-batch-url)")
	var signKey string
	fs.StringVar(&signKey, "sign-key", "", "sign every backend call (RFC 9421 hmac-sha256, with Wsbridge-Seq and Content-Digest) with the first of these comma-separated `keyid=secret` pairs (empty = unsigned; the others are for the backend's verifier during a rotation)")
	fs.StringVar(&o.journalDir, "journal", "", "crash-safe DELETEs: record every accepted connection in this `directory` (local disk, one per process) so that after a crash (kill -9, OOM) the next start sends the DELETEs the dead process owed (Wsbridge-Close-Code 1006); empty = off. See docs/protocol.md, \"Crash-safe DELETE\"")
	journalSync := "never"
	fs.StringVar(&journalSync, "journal-sync", "never", "-journal's fsync policy, for power cuts (a killed process loses nothing under any): never (the kernel writes back within ~30 s), always (fsync before each 101), or a `duration` (fsync every interval, off the upgrade path)")

	fs.StringVar(&o.cluster, "cluster", "", "join a cluster over NATS: comma-separated `URLs` (nats://host:port,…) tried in turn; any node's admin API then reaches every ClientId and one ClientId has one connection cluster-wide (empty = this node alone)")
	fs.StringVar(&o.nodeID, "node-id", "", "this node's name in the cluster (\"node\" in the admin info JSON; empty = host name:listen port)")

	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		name := "WSBRIDGE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, name+"="); ok {
				if err := fs.Set(f.Name, v); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
				}
			}
		}
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(nil)
			fs.PrintDefaults()
		}
		return nil, err
	}
	if fs.NArg() > 0 {
		errs = append(errs, fmt.Errorf("unexpected arguments %q", fs.Args()))
	}
	e.MaxOutbound = int(maxOutbound)
	e.DeflateMin = int(deflateMin)
	if deflateMin < 0 {
		errs = append(errs, errors.New("-deflate-min cannot be negative"))
	}
	if e.DeflateLevel < 1 || e.DeflateLevel > 9 {
		errs = append(errs, errors.New("-deflate-level must be between 1 and 9"))
	}
	// Messages waiting behind a POST in flight, over all connections: 32
	// per backend socket (~64 MiB of request state) before senders are
	// paused (their bytes left unread until their POST finishes) instead of
	// the bridge's memory growing behind a stalled backend.
	// With pipelining every socket carries up to -backend-pipeline calls;
	// -backend-adapt pipelines only on the few sockets a fast backend
	// gets, so there the bound stays one call per socket.
	inFlight := o.backendMaxConns
	if !o.backendAdapt {
		inFlight *= max(1, o.backendPipeline)
	}
	e.MaxQueued = 32 * inFlight
	// By default a reconnect storm may use half the backend's capacity for
	// GETs; the other half keeps serving the messages of connected clients.
	e.MaxPending = maxPending
	if maxPending < 0 {
		e.MaxPending = max(1, inFlight/2)
	}
	// By default one address may use a quarter of the pending upgrades, so
	// that it cannot lock every other client out of the node.
	e.MaxPendingPerIP = maxPendingPerIP
	if maxPendingPerIP < 0 {
		e.MaxPendingPerIP = 0
		if e.MaxConnsPerIP > 0 && e.MaxPending > 0 {
			e.MaxPendingPerIP = max(1, e.MaxPending/4)
		}
	}
	e.HoldTimeout = o.backendTimeout
	for _, s := range splitList(origins) {
		e.AllowOrigins = append(e.AllowOrigins, strings.ToLower(s))
	}
	for _, s := range splitList(proxies) {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				errs = append(errs, fmt.Errorf("-trusted-proxies: %q is not a CIDR or an address", s))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		e.TrustedProxies = append(e.TrustedProxies, p.Masked())
	}
	if e.MaxMessage <= 0 {
		errs = append(errs, errors.New("-max-message must be positive"))
	}
	if o.backendMaxConns <= 0 {
		errs = append(errs, errors.New("-backend-max-conns must be positive"))
	}
	if o.backendPipeline < 1 || o.backendPipeline > 1024 {
		errs = append(errs, errors.New("-backend-pipeline must be between 1 and 1024"))
	}
	if o.batchMax < 1 || o.batchMax > 10000 {
		errs = append(errs, errors.New("-backend-batch-max must be between 1 and 10000"))
	}
	if o.batchDelay <= 0 || o.batchDelay > time.Second {
		errs = append(errs, errors.New("-backend-batch-delay must be positive and at most 1s"))
	}
	if o.backendStuckAfter <= 0 {
		errs = append(errs, errors.New("-backend-stuck-after must be positive"))
	}
	if o.backendTimeout <= 0 {
		errs = append(errs, errors.New("-backend-timeout must be positive"))
	}
	if e.PingInterval > 0 && e.PongTimeout <= 0 {
		errs = append(errs, errors.New("-pong-timeout must be positive when -ping-interval is set"))
	}
	if e.MaxChannels < 1 {
		errs = append(errs, errors.New("-max-channels must be at least 1"))
	}
	if e.MaxConnsPerIP < 0 {
		errs = append(errs, errors.New("-max-conns-per-ip cannot be negative"))
	}
	if e.PingInterval < 0 || e.HandshakeTimeout < 0 || e.DrainTimeout < 0 || e.AcceptRate < 0 {
		errs = append(errs, errors.New("durations and rates cannot be negative"))
	}
	if signKey != "" {
		// ParseSigner's errors name the keyid and the entry, never the secret.
		s, err := sign.ParseSigner(signKey)
		if err != nil {
			errs = append(errs, fmt.Errorf("-sign-key: %w", err))
		}
		o.signer = s
	}
	if o.nodeID == "" {
		host, _ := os.Hostname()
		_, port, _ := net.SplitHostPort(e.Listen)
		o.nodeID = host + ":" + port
	}
	for _, u := range splitList(o.cluster) {
		if !strings.HasPrefix(u, "nats://") && !strings.HasPrefix(u, "tls://") {
			errs = append(errs, fmt.Errorf("-cluster: %q is not a nats:// URL", u))
		}
	}
	if sy, every, err := journal.ParseSync(journalSync); err != nil {
		errs = append(errs, fmt.Errorf("-journal-sync: %w", err))
	} else {
		o.journalSync, o.journalEvery = sy, every
	}
	switch o.logFormat {
	case "json", "console":
	default:
		errs = append(errs, fmt.Errorf("-log-format %q: want json or console", o.logFormat))
	}
	return o, errors.Join(errs...)
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
