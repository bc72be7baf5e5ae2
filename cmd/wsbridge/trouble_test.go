package main

import "testing"

// The default -backend-stuck-conns leaves the clients their share of a
// tight open-files limit.
func TestStuckConnsDefault(t *testing.T) {
	for _, tc := range []struct {
		nofile                 uint64
		backendConns, maxConns int
		want                   int
	}{
		{0, 1024, 0, 4096},         // limit unknown
		{1 << 20, 1024, 0, 4096},   // a service's LimitNOFILE
		{20000, 1024, 0, 2356},     // (20000-128-1024)/8
		{4096, 1024, 0, 368},       // a container's default
		{20000, 1024, 10000, 4096}, // what -max-conns leaves, capped
		{20000, 1024, 18000, 848},  // what -max-conns leaves
		{2048, 1024, 5000, 0},      // nothing left
		{1000, 1024, 0, 0},         // below the backend's own sockets
	} {
		if got := stuckConns(tc.nofile, tc.backendConns, tc.maxConns); got != tc.want {
			t.Errorf("stuckConns(%d, %d, %d): got %d, want %d", tc.nofile, tc.backendConns, tc.maxConns, got, tc.want)
		}
	}
}
