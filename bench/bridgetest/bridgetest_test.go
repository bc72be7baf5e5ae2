package bridgetest

import (
	"strings"
	"testing"
)

// TestStartArgs: Start puts the bridge on ephemeral ports unless the test
// names its own, so that tests never collide with a bridge run by hand on
// the default ports (7001, 7002); a flag that only starts like -listen or
// -admin (-admin-token) does not count.
func TestStartArgs(t *testing.T) {
	for _, tc := range []struct {
		args          []string
		listen, admin string // the values the command line ends up with
	}{
		{nil, "127.0.0.1:0", "127.0.0.1:0"},
		{[]string{"-admin-token", "s3cret"}, "127.0.0.1:0", "127.0.0.1:0"},
		{[]string{"-listen", "127.0.0.1:5555"}, "127.0.0.1:5555", "127.0.0.1:0"},
		{[]string{"--admin=127.0.0.1:6666", "-reuseport"}, "127.0.0.1:0", "127.0.0.1:6666"},
	} {
		got := startArgs("http://b/", tc.args)
		if v := flagValue(got, "listen"); v != tc.listen {
			t.Errorf("args %q: -listen got %q, want %q (command line %q)", tc.args, v, tc.listen, got)
		}
		if v := flagValue(got, "admin"); v != tc.admin {
			t.Errorf("args %q: -admin got %q, want %q (command line %q)", tc.args, v, tc.admin, got)
		}
	}
}

// flagValue is the last value args give the flag name, as the flag
// package would read it ("" if none).
func flagValue(args []string, name string) string {
	v := ""
	for i, a := range args {
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name && i+1 < len(args) {
			v = args[i+1]
		} else if rest, ok := strings.CutPrefix(a, name+"="); ok {
			v = rest
		}
	}
	return v
}
