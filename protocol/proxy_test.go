package protocol_test

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/protocol"
)

const proxyV2Sig = "\r\n\r\n\x00\r\nQUIT\n"

// proxyV2 builds a version 2 header: signature, version/command, family,
// length, then body (addresses and TLVs).
func proxyV2(verCmd, fam byte, body ...[]byte) string {
	var b []byte
	for _, p := range body {
		b = append(b, p...)
	}
	h := append([]byte(proxyV2Sig), verCmd, fam, 0, 0)
	binary.BigEndian.PutUint16(h[14:], uint16(len(b)))
	return string(append(h, b...))
}

func inet4(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

func inet6(src, dst string, sport, dport uint16) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint16(b, sport)
	return binary.BigEndian.AppendUint16(b, dport)
}

// A TLV as AWS's network load balancer sends it (type 0xEA, VPC endpoint).
var tlv = []byte("\xea\x00\x0a\x01vpce-1234")

type proxyCase struct {
	name    string
	in      string // header; the test appends an HTTP request to the valid ones
	err     error
	version int
	src     string // netip.AddrPort, "" for none
	dst     string
}

// proxyCases drive the tests, the fuzz seeds and the allocation test.
var proxyCases = []proxyCase{
	{name: "v1 tcp4", in: "PROXY TCP4 203.0.113.9 192.0.2.1 56324 7001\r\n", version: 1, src: "203.0.113.9:56324", dst: "192.0.2.1:7001"},
	{name: "v1 tcp6", in: "PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n", version: 1, src: "[2001:db8::7]:65535", dst: "[2001:db8::1]:0"},
	{name: "v1 tcp6 mapped v4", in: "PROXY TCP6 ::ffff:198.51.100.3 ::1 1 2\r\n", version: 1, src: "198.51.100.3:1", dst: "[::1]:2"},
	{name: "v1 tcp6 longest", in: "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", version: 1,
		src: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", dst: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"},
	{name: "v1 unknown", in: "PROXY UNKNOWN\r\n", version: 1},
	{name: "v1 unknown with addresses", in: "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", version: 1},
	{name: "v2 tcp4", in: proxyV2(0x21, 0x11, inet4("203.0.113.10", "192.0.2.1", 40000, 443)), version: 2, src: "203.0.113.10:40000", dst: "192.0.2.1:443"},
	{name: "v2 tcp6", in: proxyV2(0x21, 0x21, inet6("2001:db8::8", "2001:db8::1", 40001, 443)), version: 2, src: "[2001:db8::8]:40001", dst: "[2001:db8::1]:443"},
	{name: "v2 tcp4 with tlv", in: proxyV2(0x21, 0x11, inet4("203.0.113.11", "192.0.2.1", 1, 2), tlv), version: 2, src: "203.0.113.11:1", dst: "192.0.2.1:2"},
	{name: "v2 local", in: proxyV2(0x20, 0x00), version: 2},
	{name: "v2 local with addresses", in: proxyV2(0x20, 0x11, inet4("203.0.113.12", "192.0.2.1", 1, 2)), version: 2},
	{name: "v2 unspec", in: proxyV2(0x21, 0x00), version: 2},
	{name: "v2 udp4", in: proxyV2(0x21, 0x12, inet4("203.0.113.13", "192.0.2.1", 1, 2)), version: 2},
	{name: "v2 unix stream", in: proxyV2(0x21, 0x31, make([]byte, 216)), version: 2},

	{name: "not proxy: http", in: "GET /alice HTTP/1.1\r\n", err: protocol.ErrNoProxy},
	{name: "not proxy: crlf then junk", in: "\r\nGET", err: protocol.ErrNoProxy},
	{name: "not proxy: p", in: "POST / HTTP/1.1\r\n", err: protocol.ErrNoProxy},

	{name: "v1 lower case", in: "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", err: protocol.ErrNoProxy},
	{name: "v1 no space after PROXY", in: "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 bad family", in: "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 family mismatch", in: "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 tcp6 with v4", in: "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 leading zero in address", in: "PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 leading zero in port", in: "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 port too big", in: "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 port not a number", in: "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 two spaces", in: "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 trailing space", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", err: protocol.ErrProxyHeader},
	{name: "v1 missing port", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 extra field", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 zone", in: "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 bare lf", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", err: protocol.ErrProxyHeader},
	{name: "v1 bare cr", in: "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rx\n", err: protocol.ErrProxyHeader},
	{name: "v1 unknownx", in: "PROXY UNKNOWNX\r\n", err: protocol.ErrProxyHeader},
	{name: "v1 too long", in: "PROXY UNKNOWN " + strings.Repeat("f", 100), err: protocol.ErrProxyHeader},
	{name: "v2 version 1", in: proxyV2(0x11, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2)), err: protocol.ErrProxyHeader},
	{name: "v2 command 2", in: proxyV2(0x22, 0x11, inet4("1.2.3.4", "5.6.7.8", 1, 2)), err: protocol.ErrProxyHeader},
	{name: "v2 family 4", in: proxyV2(0x21, 0x41, inet4("1.2.3.4", "5.6.7.8", 1, 2)), err: protocol.ErrProxyHeader},
	{name: "v2 transport 3", in: proxyV2(0x21, 0x13, inet4("1.2.3.4", "5.6.7.8", 1, 2)), err: protocol.ErrProxyHeader},
	{name: "v2 tcp4 too short", in: proxyV2(0x21, 0x11, make([]byte, 11)), err: protocol.ErrProxyHeader},
	{name: "v2 tcp6 too short", in: proxyV2(0x21, 0x21, inet4("1.2.3.4", "5.6.7.8", 1, 2)), err: protocol.ErrProxyHeader},
	{name: "v2 unix too short", in: proxyV2(0x21, 0x31, make([]byte, 215)), err: protocol.ErrProxyHeader},
}

const afterProxy = "GET /alice HTTP/1.1\r\n\r\n"

func TestParseProxy(t *testing.T) {
	for _, tc := range proxyCases {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			if tc.err == nil {
				in += afterProxy
			}
			var h protocol.ProxyHeader
			n, err := protocol.ParseProxy([]byte(in), &h)
			if err != tc.err {
				t.Fatalf("error: got %v, want %v", err, tc.err)
			}
			if err != nil {
				if n != 0 {
					t.Fatalf("n: got %d, want 0 with an error", n)
				}
				return
			}
			if n != len(tc.in) {
				t.Fatalf("n: got %d, want %d", n, len(tc.in))
			}
			if h.Version != tc.version {
				t.Fatalf("version: got %d, want %d", h.Version, tc.version)
			}
			if got := addrString(h.Source); got != tc.src {
				t.Fatalf("source: got %q, want %q", got, tc.src)
			}
			if got := addrString(h.Dest); got != tc.dst {
				t.Fatalf("dest: got %q, want %q", got, tc.dst)
			}
		})
	}
}

func addrString(a netip.AddrPort) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// TestParseProxyPartial: every proper prefix of a valid header is
// incomplete (or, below the signature's length, not yet decided against),
// and a malformed header is refused no later than its end.
func TestParseProxyPartial(t *testing.T) {
	for _, tc := range proxyCases {
		if tc.err == protocol.ErrNoProxy {
			continue
		}
		for k := 0; k < len(tc.in); k++ {
			var h protocol.ProxyHeader
			_, err := protocol.ParseProxy([]byte(tc.in[:k]), &h)
			if err == protocol.ErrProxyIncomplete {
				continue
			}
			if tc.err == nil || err != tc.err {
				t.Fatalf("%s: prefix of %d bytes: got %v, want %v or incomplete", tc.name, k, err, tc.err)
			}
		}
	}
}

func TestHasProxySignature(t *testing.T) {
	for _, tc := range proxyCases {
		want := tc.err != protocol.ErrNoProxy
		if got := protocol.HasProxySignature([]byte(tc.in)); got != want {
			t.Errorf("%s: got %v, want %v", tc.name, got, want)
		}
	}
	for _, in := range []string{"", "P", "PROX", "\r\n\r\n\x00\r\nQUI"} {
		if protocol.HasProxySignature([]byte(in)) {
			t.Errorf("%q: got true for a partial signature, want false", in)
		}
	}
}

func proxyCaseNamed(name string) proxyCase {
	for _, c := range proxyCases {
		if c.name == name {
			return c
		}
	}
	panic("no proxy case " + name)
}

func BenchmarkParseProxy(b *testing.B) {
	for _, name := range []string{"v1 tcp4", "v1 tcp6", "v2 tcp4"} {
		in := []byte(proxyCaseNamed(name).in + afterProxy)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			var h protocol.ProxyHeader
			for b.Loop() {
				if _, err := protocol.ParseProxy(in, &h); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
