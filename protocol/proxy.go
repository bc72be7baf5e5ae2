package protocol

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/http"
	"net/netip"
)

// The PROXY protocol (HAProxy's proxy-protocol.txt): a TCP balancer that
// cannot add X-Forwarded-For (HAProxy in tcp mode with send-proxy or
// send-proxy-v2, cloud network load balancers) puts one header before the
// client's first byte, telling the original source address.

// ProxyHeader is a parsed PROXY protocol header.
type ProxyHeader struct {
	// Version is 1 (the text form) or 2 (the binary form).
	Version int
	// Source is the original client's address and port. It is the zero
	// AddrPort (!Source.IsValid()) when the header carries none: version 1
	// UNKNOWN, version 2 LOCAL (the balancer's own health check), or a
	// version 2 family or transport other than TCP over IPv4 or IPv6. The
	// socket's peer is then the client. An IPv4-mapped IPv6 source is
	// unmapped.
	Source netip.AddrPort
	// Dest is the address the client connected to, zero when Source is.
	Dest netip.AddrPort
}

// Limits of the PROXY protocol header.
const (
	// MaxProxyV1Len is the longest version 1 line, "\r\n" included.
	MaxProxyV1Len = 107
	// MaxProxyV2Len is the longest version 2 header: 16 bytes and a
	// length of at most 65535 (addresses and TLVs).
	MaxProxyV2Len = proxyV2Fixed + 0xffff
	proxyV2Fixed  = 16
)

// Errors returned by ParseProxy.
var (
	// ErrNoProxy is not a refusal: p does not start with a PROXY protocol
	// header, so it is the client's own first byte.
	ErrNoProxy = errors.New("protocol: no proxy protocol header")
	// ErrProxyIncomplete is not a refusal: p is a prefix of a header that
	// may still be valid, so the caller waits for more bytes.
	ErrProxyIncomplete = errors.New("protocol: incomplete proxy protocol header")
	// ErrProxyHeader is a PROXY protocol header that does not exactly match
	// the specification, or one from a peer that is not a trusted proxy
	// (400).
	ErrProxyHeader = &HTTPError{http.StatusBadRequest, "invalid proxy protocol header"}
)

var (
	proxyV1Sig = []byte("PROXY")
	proxyV2Sig = []byte("\r\n\r\n\x00\r\nQUIT\n")
)

// HasProxySignature reports whether p starts with the signature of a PROXY
// protocol header ("PROXY" or the 12-byte version 2 block), whether or not
// the rest is valid. A server that does not trust its peer refuses such a
// connection rather than take the header for the client's request.
func HasProxySignature(p []byte) bool {
	return bytes.HasPrefix(p, proxyV1Sig) || bytes.HasPrefix(p, proxyV2Sig)
}

// ParseProxy parses a PROXY protocol header, version 1 or 2, at the start
// of p into h, which is fully overwritten, and returns the header's length:
// the client's own bytes start at p[n:]. It does not allocate and h keeps
// no reference to p.
//
// Partial headers are normal: while p is a proper prefix of a header that
// may still be valid, the error is ErrProxyIncomplete (a version 1 line is
// bounded by MaxProxyV1Len, a version 2 header by its length field). When
// p's first bytes match neither signature, the error is ErrNoProxy. Any
// departure from the specification is ErrProxyHeader: a version 1 line
// without "\r\n" within MaxProxyV1Len bytes or with a bare CR or LF,
// anything but exactly one space between fields, an address not in the
// family's canonical form (IPv4 without leading zeroes, IPv6 without zone),
// a port outside 0–65535 or with a leading zero; a version 2 version other
// than 2, a command other than LOCAL or PROXY, an unassigned family or
// transport, or a length shorter than the family's addresses. TLVs after a
// version 2 address block are skipped.
func ParseProxy(p []byte, h *ProxyHeader) (n int, err error) {
	*h = ProxyHeader{}
	if !sigPrefix(p, proxyV1Sig) {
		if !sigPrefix(p, proxyV2Sig) {
			return 0, ErrNoProxy
		}
		return parseProxyV2(p, h)
	}
	if len(p) < len(proxyV1Sig) {
		return 0, ErrProxyIncomplete
	}
	return parseProxyV1(p, h)
}

// sigPrefix reports whether p and sig agree on their common length.
func sigPrefix(p, sig []byte) bool {
	k := min(len(p), len(sig))
	return bytes.Equal(p[:k], sig[:k])
}

func parseProxyV1(p []byte, h *ProxyHeader) (int, error) {
	if len(p) > len(proxyV1Sig) && p[len(proxyV1Sig)] != ' ' {
		return 0, ErrProxyHeader
	}
	window := p[:min(len(p), MaxProxyV1Len)]
	end := bytes.IndexByte(window, '\n')
	if end < 0 {
		if cr := bytes.IndexByte(window, '\r'); len(p) >= MaxProxyV1Len || cr >= 0 && cr != len(window)-1 {
			return 0, ErrProxyHeader // too long, or a CR not followed by LF
		}
		return 0, ErrProxyIncomplete
	}
	if end == 0 || window[end-1] != '\r' {
		return 0, ErrProxyHeader
	}
	line := window[len(proxyV1Sig) : end-1]
	if bytes.IndexByte(line, '\r') >= 0 {
		return 0, ErrProxyHeader
	}
	n := end + 1
	h.Version = 1
	// " UNKNOWN" and anything up to the CRLF: the peer is the client.
	if bytes.HasPrefix(line, []byte(" UNKNOWN")) && (len(line) == 8 || line[8] == ' ') {
		return n, nil
	}
	var v6 bool
	switch {
	case bytes.HasPrefix(line, []byte(" TCP4 ")):
	case bytes.HasPrefix(line, []byte(" TCP6 ")):
		v6 = true
	default:
		return 0, ErrProxyHeader
	}
	line = line[6:]
	var fields [4][]byte
	for i := range fields {
		sp := bytes.IndexByte(line, ' ')
		if i == len(fields)-1 {
			if sp >= 0 {
				return 0, ErrProxyHeader
			}
			sp = len(line)
		}
		if sp <= 0 {
			return 0, ErrProxyHeader // missing field or two spaces
		}
		fields[i] = line[:sp]
		if sp < len(line) {
			line = line[sp+1:]
		}
	}
	src, ok1 := proxyAddr(fields[0], v6)
	dst, ok2 := proxyAddr(fields[1], v6)
	sport, ok3 := proxyPort(fields[2])
	dport, ok4 := proxyPort(fields[3])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return 0, ErrProxyHeader
	}
	h.Source = netip.AddrPortFrom(src.Unmap(), sport)
	h.Dest = netip.AddrPortFrom(dst.Unmap(), dport)
	return n, nil
}

// proxyAddr parses a version 1 address of the announced family. It does
// not use netip.ParseAddr, whose errors allocate.
func proxyAddr(b []byte, v6 bool) (netip.Addr, bool) {
	if !v6 {
		a, ok := parseIPv4(b)
		return netip.AddrFrom4(a), ok
	}
	a, ok := parseIPv6(b)
	return netip.AddrFrom16(a), ok
}

// parseIPv4 parses four decimal octets without leading zeroes.
func parseIPv4(b []byte) (a [4]byte, ok bool) {
	for i := range a {
		if i > 0 {
			if len(b) == 0 || b[0] != '.' {
				return a, false
			}
			b = b[1:]
		}
		v, k := 0, 0
		for k < len(b) && k < 4 && isDigit(b[k]) {
			v = v*10 + int(b[k]-'0')
			k++
		}
		if k == 0 || k > 3 || v > 255 || k > 1 && b[0] == '0' {
			return a, false
		}
		a[i] = byte(v)
		b = b[k:]
	}
	return a, len(b) == 0
}

// parseIPv6 parses groups of 1–4 hex digits separated by colons, with at
// most one "::" and optionally a dotted IPv4 address as the last 32 bits.
func parseIPv6(b []byte) (a [16]byte, ok bool) {
	ellipsis := -1 // byte index in a where "::" stands
	if len(b) >= 2 && b[0] == ':' && b[1] == ':' {
		ellipsis = 0
		b = b[2:]
	}
	i := 0
	for len(b) > 0 && i < 16 {
		// An IPv4 tail.
		if dot := bytes.IndexByte(b, '.'); dot >= 0 && bytes.IndexByte(b, ':') < 0 {
			if i > 12 {
				return a, false
			}
			v4, ok := parseIPv4(b)
			if !ok {
				return a, false
			}
			copy(a[i:], v4[:])
			i += 4
			b = nil
			break
		}
		v, k := 0, 0
		for k < len(b) && k < 5 && hexValue(b[k]) >= 0 {
			v = v<<4 | hexValue(b[k])
			k++
		}
		if k == 0 || k > 4 {
			return a, false
		}
		a[i], a[i+1] = byte(v>>8), byte(v)
		i += 2
		b = b[k:]
		if len(b) == 0 {
			break
		}
		if b[0] != ':' || len(b) == 1 {
			return a, false
		}
		b = b[1:]
		if b[0] == ':' {
			if ellipsis >= 0 {
				return a, false
			}
			ellipsis = i
			b = b[1:]
		}
	}
	if len(b) > 0 {
		return a, false
	}
	if ellipsis < 0 {
		return a, i == 16
	}
	if i == 16 {
		return a, false // "::" must stand for at least one group
	}
	n := 16 - i
	copy(a[ellipsis+n:], a[ellipsis:i])
	clear(a[ellipsis : ellipsis+n])
	return a, true
}

func hexValue(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c - 'a' + 10)
	case 'A' <= c && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

// proxyPort parses a decimal port without leading zeroes.
func proxyPort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || len(b) > 1 && b[0] == '0' {
		return 0, false
	}
	v := 0
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return uint16(v), v <= 0xffff
}

// Version 2 commands, families and transports.
const (
	proxyCmdLocal   = 0x0
	proxyCmdProxy   = 0x1
	proxyFamInet    = 0x1
	proxyFamInet6   = 0x2
	proxyFamUnix    = 0x3
	proxyProtoStrm  = 0x1
	proxyProtoDgram = 0x2
)

func parseProxyV2(p []byte, h *ProxyHeader) (int, error) {
	if len(p) < proxyV2Fixed {
		// The version and command byte can be checked early.
		if len(p) > len(proxyV2Sig) && p[12]>>4 != 2 {
			return 0, ErrProxyHeader
		}
		return 0, ErrProxyIncomplete
	}
	verCmd, fam := p[12], p[13]
	if verCmd>>4 != 2 {
		return 0, ErrProxyHeader
	}
	cmd, family, proto := verCmd&0xf, fam>>4, fam&0xf
	if cmd != proxyCmdLocal && cmd != proxyCmdProxy || family > proxyFamUnix || proto > proxyProtoDgram {
		return 0, ErrProxyHeader
	}
	length := int(binary.BigEndian.Uint16(p[14:16]))
	var need int
	if cmd == proxyCmdProxy && proto != 0 {
		switch family {
		case proxyFamInet:
			need = 12
		case proxyFamInet6:
			need = 36
		case proxyFamUnix:
			need = 216
		}
	}
	if length < need {
		return 0, ErrProxyHeader
	}
	n := proxyV2Fixed + length
	if len(p) < n {
		return 0, ErrProxyIncomplete
	}
	h.Version = 2
	if cmd != proxyCmdProxy || proto != proxyProtoStrm {
		// LOCAL, or a transport other than a stream: the peer is the client.
		return n, nil
	}
	a := p[proxyV2Fixed:n]
	switch family {
	case proxyFamInet:
		h.Source = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[0:4])), binary.BigEndian.Uint16(a[8:10]))
		h.Dest = netip.AddrPortFrom(netip.AddrFrom4([4]byte(a[4:8])), binary.BigEndian.Uint16(a[10:12]))
	case proxyFamInet6:
		h.Source = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[0:16])).Unmap(), binary.BigEndian.Uint16(a[32:34]))
		h.Dest = netip.AddrPortFrom(netip.AddrFrom16([16]byte(a[16:32])).Unmap(), binary.BigEndian.Uint16(a[34:36]))
	}
	return n, nil
}
