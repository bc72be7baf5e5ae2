//go:build !race

package protocol_test

import (
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

// These tests prove the hot paths do not allocate. The race detector
// allocates on its own, hence the build tag.

func TestDecodeAllocs(t *testing.T) {
	in := cat(caseNamed("fragmented").in, caseNamed("small text 16 B").in, caseNamed("1 KiB binary").in,
		fr(ws.OpClose, true, closeBody(1000, "bye")))
	buf := make([]byte, len(in))
	var d protocol.Decoder
	n := testing.AllocsPerRun(100, func() {
		copy(buf, in)
		d.Reset()
		for p := buf; ; {
			ev, n, err := d.Next(p)
			if err != nil {
				t.Fatalf("Next: got %v, want nil", err)
			}
			if ev.Kind == protocol.EventNone {
				break
			}
			p = p[n:]
		}
	})
	if n != 0 {
		t.Fatalf("Decoder.Next allocs = %v, want 0", n)
	}
}

func TestParseRequestAllocs(t *testing.T) {
	in := []byte(browserRequest)
	var r protocol.Request
	n := testing.AllocsPerRun(100, func() {
		if _, err := protocol.ParseRequest(in, &r); err != nil {
			t.Fatalf("ParseRequest: got %v, want nil", err)
		}
	})
	if n != 0 {
		t.Fatalf("ParseRequest allocs = %v, want 0", n)
	}
	bad := []byte(upgrade("GET /metrics HTTP/1.1", std...))
	n = testing.AllocsPerRun(100, func() { _, _ = protocol.ParseRequest(bad, &r) })
	if n != 0 {
		t.Fatalf("ParseRequest (refused) allocs = %v, want 0", n)
	}
}

func TestParseProxyAllocs(t *testing.T) {
	for _, tc := range proxyCases {
		in := []byte(tc.in + afterProxy)
		var h protocol.ProxyHeader
		n := testing.AllocsPerRun(100, func() { _, _ = protocol.ParseProxy(in, &h) })
		if n != 0 {
			t.Errorf("ParseProxy(%s) allocs = %v, want 0", tc.name, n)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	dst := make([]byte, 0, 4096)
	payload := make([]byte, 1024)
	key := []byte(rfcKey)
	extra := []protocol.Header{{Name: []byte("Retry-After"), Value: []byte("5")}}
	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"AppendFrame", func() { dst = protocol.AppendFrame(dst[:0], ws.OpBinary, payload) }},
		{"AppendFrameHeader", func() { dst = protocol.AppendFrameHeader(dst[:0], ws.OpText, false, 70000) }},
		{"AppendClose", func() { dst = protocol.AppendClose(dst[:0], 1012, "retry=5") }},
		{"AppendClientFrame", func() { dst = protocol.AppendClientFrame(dst[:0], ws.OpText, true, testMask, payload) }},
		{"AppendSwitching", func() { dst = protocol.AppendSwitching(dst[:0], key, []byte("chat")) }},
		{"AppendAcceptKey", func() { dst = protocol.AppendAcceptKey(dst[:0], key) }},
		{"AppendRefusal", func() { dst = protocol.AppendRefusal(dst[:0], protocol.ErrVersion) }},
		{"AppendResponse", func() { dst = protocol.AppendResponse(dst[:0], 503, nil, extra, payload[:10]) }},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s allocs = %v, want 0", tc.name, n)
		}
	}
}
