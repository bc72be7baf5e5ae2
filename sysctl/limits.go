//go:build linux

package sysctl

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procRoot is where Check reads sys/net/...; tests point it at a fake tree.
var procRoot = "/proc"

// getNoFile returns the RLIMIT_NOFILE of this process; tests replace it.
var getNoFile = func() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("sysctl: getrlimit RLIMIT_NOFILE: %w", err)
	}
	return lim.Cur, lim.Max, nil
}

// RaiseNoFile raises this process's soft RLIMIT_NOFILE to its hard limit and returns the
// limits now in force. Go 1.19 and later already do this when the program starts. Calling
// RaiseNoFile makes the step explicit and gives the values to log. It does not raise the
// hard limit: that takes privilege, and it belongs to LimitNOFILE= in the systemd unit or
// to limits.d. On error, soft and hard are the limits before the call, if they were read.
func RaiseNoFile() (soft, hard uint64, err error) {
	soft, hard, err = getNoFile()
	if err != nil || soft >= hard {
		return soft, hard, err
	}
	lim := syscall.Rlimit{Cur: hard, Max: hard}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return soft, hard, fmt.Errorf("sysctl: raise RLIMIT_NOFILE from %d to %d: %w", soft, hard, err)
	}
	return getNoFile()
}

// Check returns one human-readable warning for each limit that cannot carry conns
// connections. It returns an empty slice when all is well. It reads the process's
// RLIMIT_NOFILE and files under /proc/sys. A file that is missing or cannot be parsed is
// skipped. The rules are:
//
//   - Open files: the soft RLIMIT_NOFILE must be at least conns + conns/10 + 2048. That is
//     one descriptor per client, 10% for connections that are closing, and 2048 for
//     backend connections, listeners and logs. Call [RaiseNoFile] first: Check reads the
//     soft limit, which is the one in force.
//   - net.core.somaxconn, the accept-queue cap, must be at least min(conns, B). B is
//     conns/8 rounded up to a power of two, kept between 4096 and 65535. That is the
//     backlog a reconnect storm needs, and what sysctl/tune recommends.
//   - net.ipv4.ip_local_port_range must hold at least min(conns, 55296) ports. 55296 is
//     the width of the 10240-65535 range that tune sets. Inbound clients use no ephemeral
//     port. The range limits outbound connections to one address: the backend, or a load
//     generator on the same host.
//
// If conns <= 0 (no -max-conns), only the open-file limit is checked, and the soft limit
// must be at least [DefaultNoFile].
func Check(conns int) []string {
	warnings := []string{}
	if w := checkNoFile(conns); w != "" {
		warnings = append(warnings, w)
	}
	if conns <= 0 {
		return warnings
	}
	n := uint64(conns)
	if v, ok := readUints("sys/net/core/somaxconn", 1); ok {
		if want := min(n, backlogFor(n)); v[0] < want {
			warnings = append(warnings, fmt.Sprintf(
				"net.core.somaxconn is %d, want at least %d for %d connections: reconnect bursts will overflow the accept queue and clients wait seconds to retry (run sysctl/tune apply)",
				v[0], want, conns))
		}
	}
	if v, ok := readUints("sys/net/ipv4/ip_local_port_range", 2); ok && v[1] >= v[0] {
		ports := v[1] - v[0] + 1
		if want := min(n, recommendedPorts); ports < want {
			warnings = append(warnings, fmt.Sprintf(
				"net.ipv4.ip_local_port_range %d-%d gives %d ephemeral ports, want at least %d for %d connections: outbound connections to the backend (and a local load generator) run out of ports (run sysctl/tune apply)",
				v[0], v[1], ports, want, conns))
		}
	}
	return warnings
}

// checkNoFile returns a warning when the soft RLIMIT_NOFILE is below what conns needs.
func checkNoFile(conns int) string {
	soft, hard, err := getNoFile()
	if err != nil {
		return ""
	}
	want, what := uint64(DefaultNoFile), "the default minimum"
	if conns > 0 {
		n := uint64(conns)
		want, what = fdsFor(n), fmt.Sprintf("%d connections", conns)
	}
	if soft >= want {
		return ""
	}
	fix := "raise LimitNOFILE in the systemd unit or nofile in /etc/security/limits.d (sysctl/tune apply), and fs.nr_open with it"
	if hard >= want {
		fix = "call RaiseNoFile first: the hard limit is high enough"
	}
	return fmt.Sprintf("open-file limit (RLIMIT_NOFILE) is %d (hard %d), want at least %d for %s: %s",
		soft, hard, want, what, fix)
}

// readUints reads a /proc/sys file holding exactly count whitespace-separated unsigned
// numbers. It reports false when the file is missing or holds anything else.
func readUints(rel string, count int) ([]uint64, bool) {
	b, err := os.ReadFile(filepath.Join(procRoot, rel))
	if err != nil {
		return nil, false
	}
	fields := strings.Fields(string(b))
	if len(fields) != count {
		return nil, false
	}
	out := make([]uint64, count)
	for i, f := range fields {
		v, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return nil, false
		}
		out[i] = v
	}
	return out, true
}
