package sysctl

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestTuneShellcheck keeps sysctl/tune shellcheck-clean. It skips only on a developer
// machine without shellcheck. In CI (CI=true), a missing shellcheck fails the test.
func TestTuneShellcheck(t *testing.T) {
	bin, err := exec.LookPath("shellcheck")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("shellcheck is not installed, and CI=true requires it (apt-get install shellcheck)")
		}
		t.Skip("shellcheck is not installed (in CI, with CI=true, this test fails instead)")
	}
	out, err := exec.Command(bin, "--shell=bash", "tune").CombinedOutput()
	if err != nil || len(out) > 0 {
		t.Fatalf("shellcheck tune: %v\n%s", err, out)
	}
}

// The host values that TestTuneNetns must leave alone. net.* values here are read from the
// test's own (host) network namespace. Keys that are missing are simply not compared.
var hostKeys = []string{
	"fs/file-max", "fs/nr_open", "net/core/somaxconn", "net/core/netdev_max_backlog",
	"net/ipv4/tcp_fin_timeout", "net/ipv4/ip_local_port_range", "net/ipv4/tcp_mem",
	"net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/netfilter/nf_conntrack_max",
	"net/netfilter/nf_conntrack_buckets",
}

func readHost(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, k := range hostKeys {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			m[k] = strings.Join(strings.Fields(string(b)), " ")
		}
	}
	return m
}

// netns runs commands in a network namespace created for one test.
type netns struct {
	t    *testing.T
	name string
}

var netnsSeq atomic.Int32

// newNetns creates the namespace wsbtest-<pid>-<seq> and deletes it when the test ends. It
// skips the test when the host cannot create one.
func newNetns(t *testing.T) *netns {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("network namespaces need Linux")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (run the tests with sudo)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip (iproute2) is not installed, so ip netns is unavailable")
	}
	name := fmt.Sprintf("wsbtest-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns is unavailable here: ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns := &netns{t: t, name: name}
	// Everything below relies on really being in another namespace.
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if inner := ns.run("readlink", "/proc/self/ns/net"); inner == self || inner == "" {
		t.Fatalf("ip netns exec %s runs in network namespace %q, want one other than the test's %q", name, inner, self)
	}
	return ns
}

// run runs a command inside the namespace, fails the test on error, and returns its output
// with whitespace squeezed.
func (ns *netns) run(args ...string) string {
	ns.t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("ip netns exec %s %q: %v\n%s", ns.name, args, err, out)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

// get reads /proc/sys/<key> inside the namespace, or "" when the key does not exist there.
func (ns *netns) get(key string) string {
	ns.t.Helper()
	path := "/proc/sys/" + key
	return ns.run("sh", "-c", `if [ -e "$1" ]; then cat "$1"; fi`, "sh", path)
}

// set writes /proc/sys/<key> inside the namespace.
func (ns *netns) set(key, value string) {
	ns.t.Helper()
	ns.run("sh", "-c", `printf '%s\n' "$1" > "$2"`, "sh", value, "/proc/sys/"+key)
}

// tuneEnv is where the script runs: the namespace, a scratch root and a proc root whose
// sys/fs holds plain files (fs.* keys are global) and whose sys/net is a symlink to
// /proc/sys/net, which shows the namespace of the process that reads it.
type tuneEnv struct {
	ns     *netns
	script string
	root   string // TUNE_ROOT
	proc   string // TUNE_PROC
}

func newTuneEnv(t *testing.T, ns *netns, fs map[string]string) *tuneEnv {
	t.Helper()
	script, err := filepath.Abs("tune")
	if err != nil {
		t.Fatal(err)
	}
	e := &tuneEnv{ns: ns, script: script, root: t.TempDir(), proc: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(e.proc, "sys", "fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for k, v := range fs {
		writeFile(t, filepath.Join(e.proc, "sys", k), v+"\n")
	}
	if err := os.Symlink("/proc/sys/net", filepath.Join(e.proc, "sys", "net")); err != nil {
		t.Fatal(err)
	}
	meminfo, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(e.proc, "meminfo"), string(meminfo))
	return e
}

// tune runs the script in the namespace and returns its combined output and exit status.
func (e *tuneEnv) tune(args ...string) (string, int) {
	e.ns.t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", e.ns.name, "bash", e.script}, args...)...)
	cmd.Env = append(os.Environ(), "TUNE_ROOT="+e.root, "TUNE_PROC="+e.proc)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	default:
		e.ns.t.Fatalf("tune %q: %v", args, err)
		return "", -1
	}
}

// mustTune runs the script and fails the test unless it exits with want.
func (e *tuneEnv) mustTune(want int, args ...string) string {
	e.ns.t.Helper()
	out, code := e.tune(args...)
	if code != want {
		e.ns.t.Fatalf("tune %s: exit status %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return out
}

func (e *tuneEnv) fakeFS(key string) string {
	e.ns.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.proc, "sys", key))
	if err != nil {
		e.ns.t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTuneNetns runs check, apply (dry run, real, twice) and revert for real, inside a
// network namespace that the test creates. net.* keys are per namespace, so the script
// changes them there. fs.* keys are global, so TUNE_PROC sends them to plain files.
// TUNE_ROOT keeps /etc and /var/lib in a temporary directory. Keys that are global but
// visible in a namespace (conntrack) are read-only there, and the connection count is
// chosen so the script would not need to raise them anyway. At the end the test checks
// that the host's own values did not move.
func TestTuneNetns(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	ns := newNetns(t)
	hostBefore := readHost(t)
	t.Cleanup(func() {
		hostAfter := readHost(t)
		for k, v := range hostBefore {
			if hostAfter[k] != v {
				t.Errorf("host /proc/sys/%s is %q after the test, want %q: the test leaked out of its namespace", k, hostAfter[k], v)
			}
		}
	})

	// Connections: 20000, less if a small conntrack table (global, read-only here) could
	// not carry them, because the test must not need the script to raise it.
	conns := uint64(20000)
	if v, err := strconv.ParseUint(ns.get("net/netfilter/nf_conntrack_max"), 10, 64); err == nil {
		conns = min(conns, v/2)
	}
	if v, err := strconv.ParseUint(ns.get("net/netfilter/nf_conntrack_buckets"), 10, 64); err == nil {
		conns = min(conns, v*2)
	}
	if conns < 1000 {
		t.Fatalf("conntrack tables too small for a meaningful run: %d connections", conns)
	}
	n := strconv.FormatUint(conns, 10)

	// Start from values an untuned host would have, in the namespace and in the fake fs.
	before := map[string]string{
		"net/core/somaxconn":           "128",
		"net/ipv4/tcp_max_syn_backlog": "128",
		"net/ipv4/tcp_fin_timeout":     "60",
		"net/ipv4/tcp_tw_reuse":        "2",
		"net/ipv4/ip_local_port_range": "32768 60999",
		"net/ipv4/tcp_rmem":            "4096 131072 6291456",
		"net/ipv4/tcp_wmem":            "4096 16384 4194304",
	}
	for k, v := range before {
		if ns.get(k) == "" {
			delete(before, k) // a kernel where this key is global: tune skips it too
			continue
		}
		ns.set(k, v)
	}
	fsBefore := map[string]string{"fs/nr_open": "1024", "fs/file-max": "8192"}
	e := newTuneEnv(t, ns, fsBefore)

	nofile := (fdsFor(conns) + 1023) / 1024 * 1024
	backlog := strconv.FormatUint(backlogFor(conns), 10)
	want := map[string]string{
		"net/core/somaxconn":           backlog,
		"net/ipv4/tcp_max_syn_backlog": backlog,
		"net/ipv4/tcp_fin_timeout":     "15",
		"net/ipv4/tcp_tw_reuse":        "1",
		"net/ipv4/ip_local_port_range": "10240 65535",
		"net/ipv4/tcp_rmem":            "4096 4096 16777216",
		"net/ipv4/tcp_wmem":            "4096 4096 16777216",
	}
	wantFS := map[string]string{
		"fs/nr_open":  strconv.FormatUint(nofile, 10),
		"fs/file-max": strconv.FormatUint(nofile+65536, 10),
	}
	sysctlFile := filepath.Join(e.root, "etc/sysctl.d/99-wsbridge.conf")
	limitsFile := filepath.Join(e.root, "etc/security/limits.d/wsbridge.conf")
	stateFile := filepath.Join(e.root, "var/lib/wsbridge-tune/saved.conf")

	requireValues := func(step string, ns map[string]string, fs map[string]string) {
		t.Helper()
		for k, v := range ns {
			if _, ok := before[k]; !ok {
				continue
			}
			if got := e.ns.get(k); got != v {
				t.Errorf("%s: %s in the namespace is %q, want %q", step, k, got, v)
			}
		}
		for k, v := range fs {
			if got := e.fakeFS(k); got != v {
				t.Errorf("%s: TUNE_PROC/sys/%s is %q, want %q", step, k, got, v)
			}
		}
	}
	requireAbsent := func(step string, paths ...string) {
		t.Helper()
		for _, p := range paths {
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s exists (stat error %v), want it absent", step, p, err)
			}
		}
	}

	// Before apply: the fake fs.nr_open (1024) cannot carry anything.
	out := e.mustTune(1, "check", "--connections", n)
	if !strings.Contains(out, "Bottleneck: ") || !strings.Contains(out, "Not enough for "+n) {
		t.Errorf("check before apply does not name a bottleneck:\n%s", out)
	}

	// Dry run: shows the changes, changes nothing.
	out = e.mustTune(0, "apply", "--connections", n, "--dry-run")
	for _, s := range []string{"would set net.core.somaxconn: 128 -> " + backlog, "+net.core.somaxconn = " + backlog, "dry run: nothing changed"} {
		if _, ok := before["net/core/somaxconn"]; ok && !strings.Contains(out, s) {
			t.Errorf("apply --dry-run output lacks %q:\n%s", s, out)
		}
	}
	requireValues("after apply --dry-run", before, fsBefore)
	requireAbsent("after apply --dry-run", sysctlFile, limitsFile, stateFile)

	// Apply.
	out = e.mustTune(0, "apply", "--connections", n)
	t.Logf("tune apply --connections %s:\n%s", n, out)
	requireValues("after apply", want, wantFS)
	sysctlConf, err := os.ReadFile(sysctlFile)
	if err != nil {
		t.Fatalf("apply did not write the sysctl.d file: %v", err)
	}
	for _, line := range []string{"net.core.somaxconn = " + backlog, "fs.nr_open = " + wantFS["fs/nr_open"], "net.ipv4.tcp_fin_timeout = 15"} {
		if !strings.Contains(string(sysctlConf), "\n"+line+"\n") {
			t.Errorf("%s lacks the line %q", sysctlFile, line)
		}
	}
	if strings.Contains(string(sysctlConf), "tcp_tw_recycle =") {
		t.Errorf("%s sets tcp_tw_recycle, removed in Linux 4.12", sysctlFile)
	}
	limitsConf, err := os.ReadFile(limitsFile)
	if err != nil {
		t.Fatalf("apply did not write the limits.d file: %v", err)
	}
	if line := fmt.Sprintf("wsbridge hard nofile %d\n", nofile); !strings.Contains(string(limitsConf), line) {
		t.Errorf("%s lacks %q", limitsFile, line)
	}
	if _, err := os.Stat(stateFile); err != nil {
		t.Errorf("apply left no state file: %v", err)
	}

	// Apply again: nothing to change, and nothing changes.
	out = e.mustTune(0, "apply", "--connections", n)
	if !strings.Contains(out, "nothing to change") || strings.Contains(out, "set ") || strings.Contains(out, "wrote ") {
		t.Errorf("second apply changed something, want \"nothing to change\":\n%s", out)
	}
	requireValues("after the second apply", want, wantFS)
	for path, was := range map[string][]byte{sysctlFile: sysctlConf, limitsFile: limitsConf} {
		if now, err := os.ReadFile(path); err != nil || !bytes.Equal(now, was) {
			t.Errorf("second apply rewrote %s (err %v)", path, err)
		}
	}

	// Check: enough for N, not for an absurd count.
	out = e.mustTune(0, "check", "--connections", n)
	if !strings.Contains(out, "Enough for "+n) {
		t.Errorf("check after apply:\n%s", out)
	}
	out = e.mustTune(1, "check", "--connections", "1000000000")
	if !strings.Contains(out, "Not enough for 1000000000") {
		t.Errorf("check for 10^9 connections:\n%s", out)
	}

	// Not root: apply and revert refuse with status 2 before touching anything.
	if setpriv, err := exec.LookPath("setpriv"); err == nil {
		script, err := os.ReadFile(e.script)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range []string{"apply --connections 10", "revert"} {
			// Inside the namespace too, in case the script failed to stop.
			args := append([]string{"netns", "exec", ns.name, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-s", "--"}, strings.Fields(cmd)...)
			c := exec.Command("ip", args...)
			c.Dir = "/"
			c.Stdin = bytes.NewReader(script)
			c.Env = append(os.Environ(), "TUNE_ROOT="+e.root, "TUNE_PROC="+e.proc)
			out, err := c.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "as root") {
				t.Errorf("tune %s as nobody: %v, want exit status 2 and a message about root\n%s", cmd, err, out)
			}
		}
	}

	// Revert: the original values are back, the files and the state are gone.
	out = e.mustTune(0, "revert")
	t.Logf("tune revert:\n%s", out)
	requireValues("after revert", before, fsBefore)
	requireAbsent("after revert", sysctlFile, limitsFile, stateFile, filepath.Dir(stateFile))
	out = e.mustTune(0, "revert")
	if !strings.Contains(out, "nothing to revert") {
		t.Errorf("second revert: %s", out)
	}
}

// TestTuneRevertRestoresFiles covers a file that existed before apply: revert must put its
// old content back, not delete it.
func TestTuneRevertRestoresFiles(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	ns := newNetns(t)
	e := newTuneEnv(t, ns, map[string]string{"fs/nr_open": "1048576", "fs/file-max": "9223372036854775807"})
	for _, k := range []string{"net/core/somaxconn", "net/ipv4/tcp_max_syn_backlog"} {
		if ns.get(k) != "" {
			ns.set(k, "65535")
		}
	}
	old := "# hand-made\nnet.core.somaxconn = 65535\n"
	sysctlFile := filepath.Join(e.root, "etc/sysctl.d/99-wsbridge.conf")
	writeFile(t, sysctlFile, old)

	e.mustTune(0, "apply", "--connections", "1000")
	if b, _ := os.ReadFile(sysctlFile); string(b) == old {
		t.Fatalf("apply left %s as it was", sysctlFile)
	}
	e.mustTune(0, "revert")
	if b, err := os.ReadFile(sysctlFile); err != nil || string(b) != old {
		t.Errorf("after revert %s is %q (err %v), want the old content %q", sysctlFile, b, err, old)
	}
}

// TestTuneUsage checks argument errors and --help without touching anything.
func TestTuneUsage(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("bash is not installed")
	}
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"--help"}, 0, "TUNE_PROC"},
		{nil, 2, "missing command"},
		{[]string{"check"}, 2, "--connections N"},
		{[]string{"check", "--connections", "0"}, 2, "--connections N"},
		{[]string{"check", "--connections", "many"}, 2, "--connections N"},
		{[]string{"check", "--connections", "10", "--dry-run"}, 2, "--dry-run goes with apply"},
		{[]string{"revert", "--connections", "10"}, 2, "revert takes no --connections"},
		{[]string{"frobnicate"}, 2, "unknown argument"},
	} {
		cmd := exec.Command("bash", append([]string{"tune"}, tc.args...)...)
		cmd.Env = append(os.Environ(), "TUNE_ROOT="+t.TempDir(), "TUNE_PROC="+t.TempDir())
		out, err := cmd.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tc.code || !strings.Contains(string(out), tc.out) {
			t.Errorf("tune %q: exit status %d, output %q; want status %d and %q", tc.args, code, out, tc.code, tc.out)
		}
	}
}
