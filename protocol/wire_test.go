package protocol_test

import (
	"testing"

	"github.com/wsbridge/wsbridge/protocol"
)

func TestIsBinaryContentType(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		want bool
	}{
		{"application/octet-stream", true},
		{"Application/Octet-Stream; charset=x", true},
		{"APPLICATION/OCTET-STREAM", true},
		{" application/octet-stream ;x=y", true},
		{"application/octet-stream\t", true},
		{"application/octet-stream;", true},
		{"", false},
		{"text/plain", false},
		{"application/octet-streamy", false},
		{"application/octet-stream-x; charset=x", false},
		{"application/octet", false},
		{"x application/octet-stream", false},
		{";application/octet-stream", false},
	} {
		if got := protocol.IsBinaryContentType([]byte(tc.ct)); got != tc.want {
			t.Errorf("IsBinaryContentType(%q) = %v, want %v", tc.ct, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		protocol.IsBinaryContentType([]byte("Application/Octet-Stream; charset=x"))
	}); n != 0 {
		t.Errorf("IsBinaryContentType allocates %v times, want 0", n)
	}
}
