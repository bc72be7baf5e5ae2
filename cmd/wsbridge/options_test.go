package main

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/journal"
)

func TestOptionsDefaults(t *testing.T) {
	o, err := parseOptions(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "listen", o.engine.Listen, ":7001")
	requireEqual(t, "backend", o.backend, "http://127.0.0.1:8000/")
	requireEqual(t, "admin", o.admin, "127.0.0.1:7002")
	requireEqual(t, "backend-max-conns", o.backendMaxConns, 1024)
	requireEqual(t, "backend-pipeline", o.backendPipeline, 16)
	requireEqual(t, "backend-adapt", o.backendAdapt, true)
	requireEqual(t, "max-pending-upgrades", o.engine.MaxPending, 512)
	requireEqual(t, "backend-timeout", o.backendTimeout, 60*time.Second)
	requireEqual(t, "max-message", o.engine.MaxMessage, int64(1<<20))
	requireEqual(t, "ping-interval", o.engine.PingInterval, 30*time.Second)
	requireEqual(t, "pong-timeout", o.engine.PongTimeout, 10*time.Second)
	requireEqual(t, "handshake-timeout", o.engine.HandshakeTimeout, 10*time.Second)
	requireEqual(t, "drain-timeout", o.engine.DrainTimeout, 30*time.Second)
	requireEqual(t, "log-format", o.logFormat, "json")
	requireEqual(t, "max-conns-per-ip", o.engine.MaxConnsPerIP, 0)
	requireEqual(t, "max-pending-per-ip", o.engine.MaxPendingPerIP, 0)
	requireEqual(t, "max-channels", o.engine.MaxChannels, 64)
}

// The per-address limits are off by default; with -max-conns-per-ip one
// address may by default hold a quarter of the pending upgrades.
func TestOptionsPerIP(t *testing.T) {
	for _, tc := range []struct {
		args                []string
		wantConns, wantPend int
	}{
		{[]string{"-max-conns-per-ip", "100"}, 100, 128},
		{[]string{"-max-conns-per-ip", "100", "-max-pending-upgrades", "2"}, 100, 1},
		{[]string{"-max-conns-per-ip", "100", "-max-pending-per-ip", "0"}, 100, 0},
		{[]string{"-max-pending-per-ip", "5"}, 0, 5},
		{[]string{"-max-conns-per-ip", "100", "-max-pending-upgrades", "0"}, 100, 0},
	} {
		o, err := parseOptions(tc.args, nil)
		if err != nil {
			t.Fatal(err)
		}
		requireEqual(t, fmt.Sprint(tc.args, " max-conns-per-ip"), o.engine.MaxConnsPerIP, tc.wantConns)
		requireEqual(t, fmt.Sprint(tc.args, " max-pending-per-ip"), o.engine.MaxPendingPerIP, tc.wantPend)
	}
}

// Environment first, flags win.
func TestOptionsEnvAndFlags(t *testing.T) {
	env := []string{
		"WSBRIDGE_MAX_CONNS=5000",
		"WSBRIDGE_MAX_MESSAGE=64KiB",
		"WSBRIDGE_LISTEN=:9000",
		"WSBRIDGE_REUSEPORT=true",
		"WSBRIDGE_ALLOW_ORIGIN=https://A.example.com, http://localhost:3000",
		"WSBRIDGE_TRUSTED_PROXIES=10.0.0.0/8,192.168.1.7",
		"UNRELATED=1",
	}
	o, err := parseOptions([]string{"-listen", ":9100", "-ping-interval", "0"}, env)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "max-conns from env", o.engine.MaxConns, 5000)
	requireEqual(t, "max-message with unit", o.engine.MaxMessage, int64(64<<10))
	requireEqual(t, "flag beats env", o.engine.Listen, ":9100")
	requireEqual(t, "reuseport", o.engine.ReusePort, true)
	requireEqual(t, "ping disabled", o.engine.PingInterval, time.Duration(0))
	requireEqual(t, "origins", strings.Join(o.engine.AllowOrigins, " "), "https://a.example.com http://localhost:3000")
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
	requireEqual(t, "proxies", len(o.engine.TrustedProxies), 2)
	for i := range want {
		requireEqual(t, "proxy", o.engine.TrustedProxies[i], want[i])
	}
	requireEqual(t, "hold timeout follows backend-timeout", o.engine.HoldTimeout, 60*time.Second)
}

func TestOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  []string
		want string
	}{
		{[]string{"-max-message", "lots"}, nil, "invalid size"},
		{nil, []string{"WSBRIDGE_MAX_CONNS=many"}, "WSBRIDGE_MAX_CONNS"},
		{[]string{"-trusted-proxies", "not-a-cidr"}, nil, "-trusted-proxies"},
		{[]string{"-backend-max-conns", "0"}, nil, "-backend-max-conns"},
		{[]string{"-backend-pipeline", "0"}, nil, "-backend-pipeline"},
		{[]string{"-log-format", "xml"}, nil, "-log-format"},
		{[]string{"-nonsense"}, nil, "not defined"},
		{[]string{"stray"}, nil, "unexpected arguments"},
		{[]string{"-max-conns-per-ip", "-1"}, nil, "-max-conns-per-ip"},
	} {
		_, err := parseOptions(tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v %v: got error %v, want one mentioning %q", tc.args, tc.env, err, tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"1024": 1024, "4KiB": 4 << 10, "2 MiB": 2 << 20, "1g": 1 << 30, "10b": 10} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q): got %d, %v, want %d", in, got, err, want)
		}
	}
}

// Fixed pipelining (-backend-adapt=false) multiplies what the backend
// sockets carry, and so the default admission and queue bounds; adaptive
// pipelining does not (it pipelines only on the few sockets a fast
// backend gets).
func TestOptionsPipelineBounds(t *testing.T) {
	o, err := parseOptions([]string{"-backend-max-conns", "16", "-backend-pipeline", "8", "-backend-adapt=false"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "max-pending-upgrades", o.engine.MaxPending, 64)
	requireEqual(t, "queued messages", o.engine.MaxQueued, 32*128)
	o, err = parseOptions([]string{"-backend-max-conns", "16", "-backend-pipeline", "8"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "max-pending-upgrades", o.engine.MaxPending, 8)
	requireEqual(t, "queued messages", o.engine.MaxQueued, 32*16)
}

// -sign-key: off by default, read from WSBRIDGE_SIGN_KEY, the first key
// signs, and a bad value is refused without the secret in the error.
func TestOptionsSignKey(t *testing.T) {
	o, err := parseOptions(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.signer != nil {
		t.Fatal("signing is on by default")
	}
	o, err = parseOptions(nil, []string{"WSBRIDGE_SIGN_KEY=new=s3cret-new,old=s3cret-old"})
	if err != nil {
		t.Fatal(err)
	}
	if o.signer == nil || o.signer.KeyID() != "new" {
		t.Fatalf("signer from env: got %v, want keyid new", o.signer)
	}
	_, err = parseOptions([]string{"-sign-key", "a=s3cret-a,a=s3cret-b"}, nil)
	if err == nil || !strings.Contains(err.Error(), "-sign-key") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("duplicate keyid: got %v, want an error naming -sign-key without the secret", err)
	}
}

// -journal and -journal-sync: off and never by default, read from
// WSBRIDGE_JOURNAL and WSBRIDGE_JOURNAL_SYNC, a bad policy refused.
func TestOptionsJournal(t *testing.T) {
	o, err := parseOptions(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "journal off", o.journalDir, "")
	requireEqual(t, "journal-sync default", o.journalSync, journal.SyncNever)
	o, err = parseOptions([]string{"-journal-sync", "250ms"}, []string{"WSBRIDGE_JOURNAL=/var/lib/wsbridge", "WSBRIDGE_JOURNAL_SYNC=always"})
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "journal from env", o.journalDir, "/var/lib/wsbridge")
	requireEqual(t, "journal-sync flag beats env", o.journalSync, journal.SyncInterval)
	requireEqual(t, "journal-sync interval", o.journalEvery, 250*time.Millisecond)
	o, err = parseOptions(nil, []string{"WSBRIDGE_JOURNAL_SYNC=always"})
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "journal-sync always", o.journalSync, journal.SyncAlways)
	for _, bad := range []string{"sometimes", "-1s", "0"} {
		if _, err := parseOptions([]string{"-journal-sync", bad}, nil); err == nil || !strings.Contains(err.Error(), "-journal-sync") {
			t.Errorf("-journal-sync %s: got %v, want an error naming -journal-sync", bad, err)
		}
	}
}

func TestOptionsBatch(t *testing.T) {
	o, err := parseOptions(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "batching off by default", o.batchURL, "")
	requireEqual(t, "batch max default", o.batchMax, 100)
	requireEqual(t, "batch delay default", o.batchDelay, time.Millisecond)
	o, err = parseOptions([]string{"-backend-batch-max", "50"}, []string{
		"WSBRIDGE_BACKEND_BATCH_URL=http://127.0.0.1:8000/batch",
		"WSBRIDGE_BACKEND_BATCH_MAX=20",
		"WSBRIDGE_BACKEND_BATCH_DELAY=3ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "batch url from env", o.batchURL, "http://127.0.0.1:8000/batch")
	requireEqual(t, "flag beats env", o.batchMax, 50)
	requireEqual(t, "batch delay from env", o.batchDelay, 3*time.Millisecond)
	for _, args := range [][]string{{"-backend-batch-max", "0"}, {"-backend-batch-delay", "0s"}, {"-backend-batch-delay", "2s"}} {
		if _, err := parseOptions(args, nil); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: err %v, want one naming %s", args, err, args[0])
		}
	}
}

func TestOptionsDeflate(t *testing.T) {
	o, err := parseOptions(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "deflate off by default", o.engine.Deflate, false)
	requireEqual(t, "deflate-min", o.engine.DeflateMin, 256)
	requireEqual(t, "deflate-level", o.engine.DeflateLevel, 1)
	o, err = parseOptions([]string{"-deflate-level", "6"}, []string{"WSBRIDGE_DEFLATE=true", "WSBRIDGE_DEFLATE_MIN=1KiB"})
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "deflate from env", o.engine.Deflate, true)
	requireEqual(t, "deflate-min from env", o.engine.DeflateMin, 1024)
	requireEqual(t, "deflate-level", o.engine.DeflateLevel, 6)
	for _, args := range [][]string{{"-deflate-level", "0"}, {"-deflate-level", "10"}, {"-deflate-min", "-1"}} {
		if _, err := parseOptions(args, nil); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("%v: got %v, want an error naming %s", args, err, args[0])
		}
	}
}

func TestOptionsCluster(t *testing.T) {
	o, err := parseOptions([]string{"-listen", "127.0.0.1:7555"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	requireEqual(t, "default -node-id", o.nodeID, host+":7555")
	requireEqual(t, "default -cluster", o.cluster, "")
	o, err = parseOptions([]string{"-cluster", "nats://a:4222, nats://b:4222", "-node-id", "n1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "-node-id", o.nodeID, "n1")
	if _, err := parseOptions([]string{"-cluster", "http://a:4222"}, nil); err == nil {
		t.Fatal("-cluster with an http URL accepted")
	}
}
