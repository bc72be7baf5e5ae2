//go:build linux

package sysctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fakeProc writes files (relative path → content) under a temporary proc root, points
// procRoot at it and getNoFile at the given limits, and restores both when the test ends.
func fakeProc(t *testing.T, files map[string]string, soft, hard uint64) {
	t.Helper()
	root := t.TempDir()
	for rel, content := range files {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	oldRoot, oldNoFile := procRoot, getNoFile
	t.Cleanup(func() { procRoot, getNoFile = oldRoot, oldNoFile })
	procRoot = root
	getNoFile = func() (uint64, uint64, error) { return soft, hard, nil }
}

// tunedHost is what sysctl/tune apply leaves behind for 250,000 connections.
var tunedHost = map[string]string{
	"sys/net/core/somaxconn":           "32768\n",
	"sys/net/ipv4/ip_local_port_range": "10240\t65535\n",
}

var checkCases = []struct {
	name       string
	conns      int
	files      map[string]string
	soft, hard uint64
	want       []string // substrings, one per expected warning, in order
}{
	{name: "tuned host", conns: 250000, files: tunedHost, soft: 1048576, hard: 1048576},
	{
		name: "default host", conns: 250000, soft: 1024, hard: 524288,
		files: map[string]string{
			"sys/net/core/somaxconn":           "4096\n",
			"sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
		},
		want: []string{
			"RLIMIT_NOFILE) is 1024 (hard 524288), want at least 277048 for 250000 connections: call RaiseNoFile",
			"net.core.somaxconn is 4096, want at least 32768",
			"32768-60999 gives 28232 ephemeral ports, want at least 55296",
		},
	},
	{
		name: "hard limit too low", conns: 250000, files: tunedHost, soft: 65536, hard: 65536,
		want: []string{"want at least 277048 for 250000 connections: raise LimitNOFILE"},
	},
	{name: "exactly enough fds", conns: 1000, files: tunedHost, soft: 1000 + 100 + 2048, hard: 1000 + 100 + 2048},
	{
		name: "one fd short", conns: 1000, files: tunedHost, soft: 1000 + 100 + 2047, hard: 1000 + 100 + 2047,
		want: []string{"is 3147 (hard 3147), want at least 3148"},
	},
	{
		// A small deployment needs no more backlog or ports than it has connections.
		name: "small count on an old kernel", conns: 100, soft: 4096, hard: 4096,
		files: map[string]string{
			"sys/net/core/somaxconn":           "128\n",
			"sys/net/ipv4/ip_local_port_range": "60000 60099\n",
		},
	},
	{
		name: "small count, tiny backlog", conns: 1000, soft: 4096, hard: 4096,
		files: map[string]string{"sys/net/core/somaxconn": "128\n"},
		want:  []string{"net.core.somaxconn is 128, want at least 1000"},
	},
	{name: "missing proc files are ignored", conns: 250000, soft: 1 << 20, hard: 1 << 20},
	{
		name: "unparsable proc files are ignored", conns: 250000, soft: 1 << 20, hard: 1 << 20,
		files: map[string]string{
			"sys/net/core/somaxconn":           "lots\n",
			"sys/net/ipv4/ip_local_port_range": "1024\n",
		},
	},
	{
		name: "no count: only the fd limit, against DefaultNoFile", conns: 0, soft: 9999, hard: 9999,
		files: map[string]string{"sys/net/core/somaxconn": "1\n"},
		want:  []string{"is 9999 (hard 9999), want at least 10000 for the default minimum"},
	},
	{
		name: "negative count is no count", conns: -1, soft: 10000, hard: 10000,
		files: map[string]string{"sys/net/core/somaxconn": "1\n"},
	},
}

func TestCheck(t *testing.T) {
	for _, tc := range checkCases {
		t.Run(tc.name, func(t *testing.T) {
			fakeProc(t, tc.files, tc.soft, tc.hard)
			got := Check(tc.conns)
			if got == nil {
				t.Fatal("Check returned nil, want a non-nil slice")
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d warnings %q, want %d matching %q", len(got), got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("warning %d is %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestBacklogFor(t *testing.T) {
	for _, tc := range []struct{ n, want uint64 }{
		{0, 4096}, {10000, 4096}, {40000, 8192}, {250000, 32768}, {262144, 32768},
		{262152, 65535}, {10000000, 65535},
	} {
		if got := backlogFor(tc.n); got != tc.want {
			t.Errorf("backlogFor(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

func TestRaiseNoFile(t *testing.T) {
	soft, hard, err := RaiseNoFile()
	if err != nil {
		t.Fatalf("RaiseNoFile: %v", err)
	}
	if soft != hard {
		t.Errorf("after RaiseNoFile soft = %d, want the hard limit %d", soft, hard)
	}
	gotSoft, gotHard, err := getNoFile()
	if err != nil {
		t.Fatal(err)
	}
	if gotSoft != soft || gotHard != hard {
		t.Errorf("getrlimit says %d/%d, want %d/%d as RaiseNoFile returned", gotSoft, gotHard, soft, hard)
	}
}
