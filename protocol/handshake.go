package protocol

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
)

// Limits of the upgrade request.
const (
	// MaxHeaderBytes is the largest request head, final "\r\n\r\n"
	// included; a larger one is refused with 431.
	MaxHeaderBytes = 8 << 10
	// MaxForward is how many allow-listed headers are kept per request.
	MaxForward = 16
	// MaxClientIDLen is the longest valid ClientId.
	MaxClientIDLen = 128
)

// HTTPError is a refused upgrade: the status to answer with, and a short
// reason for the response body.
type HTTPError struct {
	// Status is the HTTP status code to answer with.
	Status int
	// Reason is a short lower-case explanation, sent as the response body.
	Reason string
}

// Error returns the reason with the package prefix.
func (e *HTTPError) Error() string { return "protocol: " + e.Reason }

// Errors returned by ParseRequest. All but ErrIncomplete are *HTTPError
// refusals; AppendRefusal writes the response for them.
var (
	// ErrIncomplete is not a refusal: the head has no final "\r\n\r\n" yet
	// and is at most MaxHeaderBytes long, so the caller waits for more bytes.
	ErrIncomplete = errors.New("protocol: incomplete request head")
	// ErrHeaderTooLarge is a request head over MaxHeaderBytes (431).
	ErrHeaderTooLarge = &HTTPError{http.StatusRequestHeaderFieldsTooLarge, "request header too large"}
	// ErrMalformed is a request that is not valid HTTP/1.1 (400): bad request
	// line or header line syntax, missing or repeated Host, bare CR or LF,
	// a header without a colon or with a space before it, obs-fold, control
	// characters, a target that is not origin-form, or a request body.
	ErrMalformed = &HTTPError{http.StatusBadRequest, "malformed request"}
	// ErrMethod is a method other than GET (405).
	ErrMethod = &HTTPError{http.StatusMethodNotAllowed, "method not allowed"}
	// ErrHTTPVersion is an HTTP version other than 1.1 (505).
	ErrHTTPVersion = &HTTPError{http.StatusHTTPVersionNotSupported, "http version not supported"}
	// ErrNotUpgrade is a request without an "Upgrade: websocket" token or
	// without an "upgrade" token in Connection: a plain HTTP request (426).
	ErrNotUpgrade = &HTTPError{http.StatusUpgradeRequired, "websocket upgrade required"}
	// ErrVersion is a Sec-WebSocket-Version missing or other than 13 (426);
	// its response carries "Sec-WebSocket-Version: 13".
	ErrVersion = &HTTPError{http.StatusUpgradeRequired, "unsupported websocket version"}
	// ErrKey is a Sec-WebSocket-Key missing, repeated, or not the base64 of
	// exactly 16 bytes (400).
	ErrKey = &HTTPError{http.StatusBadRequest, "invalid websocket key"}
	// ErrClientID is a ClientId that ValidClientID refuses (400).
	ErrClientID = &HTTPError{http.StatusBadRequest, "invalid client id"}
)

// Header is one raw header line; both fields alias the bytes they were
// parsed from (for Request.Forward: the buffer given to ParseRequest).
type Header struct {
	Name, Value []byte
}

// Request is a parsed upgrade request. Every []byte aliases the buffer given
// to ParseRequest and is valid only as long as that buffer is (for a gnet
// connection buffer: until the head is discarded); copy what must outlive it.
type Request struct {
	// ClientID is the raw path after '/', before '?', valid by ValidClientID.
	ClientID []byte
	// Query is the raw query without '?': nil when absent, empty but not nil
	// when the target ends with '?'.
	Query []byte
	// Host is the Host header value.
	Host []byte
	// Key is the Sec-WebSocket-Key value.
	Key []byte
	// Origin is the Origin header value (the first one), nil when absent.
	Origin []byte
	// Protocols is the first Sec-WebSocket-Protocol value as sent (a
	// comma-separated list), nil when absent.
	Protocols []byte
	// XForwardedFor is the X-Forwarded-For value as sent, nil when absent;
	// the last one when repeated.
	XForwardedFor []byte
	// Forward holds the allow-listed headers (see ForwardHeaders) in arrival
	// order with their names as sent; Forward[:NForward] are set.
	Forward [MaxForward]Header
	// NForward is how many entries of Forward are set.
	NForward int
	// Deflate reports that a Sec-WebSocket-Extensions header holds a
	// permessage-deflate offer the bridge can take (see AcceptsDeflate).
	Deflate bool
}

// ForwardHeaders is the allow-list of client request headers passed on to
// the backend with the upgrade GET, compared case-insensitively. Headers past
// MaxForward are dropped. The entries must be lower case.
var ForwardHeaders = []string{
	"authorization",
	"cookie",
	"origin",
	"user-agent",
	"accept-language",
	"referer",
	"sec-websocket-protocol",
	"x-request-id",
}

// ParseRequest parses an HTTP/1.1 WebSocket upgrade request at the start of p
// into r, which is fully overwritten, and returns the length of the head
// including the final "\r\n\r\n". Every []byte in r aliases p.
//
// Header names are case-insensitive; Connection and Upgrade are
// comma-separated token lists (case-insensitive, possibly over several
// lines). The request target must be origin-form ("/..."), and the ClientId
// is validated here, so nothing invalid reaches the backend. A request that
// announces a body (Transfer-Encoding, or a Content-Length other than 0) is
// malformed, since the bytes after the head must be WebSocket frames.
//
// If p holds no "\r\n\r\n" yet, the error is ErrIncomplete when len(p) <=
// MaxHeaderBytes, else ErrHeaderTooLarge; a complete head longer than
// MaxHeaderBytes is ErrHeaderTooLarge too, and n is 0 in these cases. Any
// other refusal is one of the *HTTPError sentinels, with n the head length.
// Checks come in this order: head syntax (400), method (405), HTTP version
// (505), Host and body (400), Upgrade and Connection (426), Sec-WebSocket-Version
// (426), Sec-WebSocket-Key (400), ClientId (400).
func ParseRequest(p []byte, r *Request) (n int, err error) {
	*r = Request{}
	window := p
	if len(window) > MaxHeaderBytes {
		window = window[:MaxHeaderBytes]
	}
	i := bytes.Index(window, crlfcrlf)
	if i < 0 {
		if len(p) <= MaxHeaderBytes {
			return 0, ErrIncomplete
		}
		return 0, ErrHeaderTooLarge
	}
	n = i + 4
	rest := p[:i+2] // every line, each with its "\r\n"

	line, rest, ok := nextLine(rest)
	if !ok {
		return n, ErrMalformed
	}
	method, target, version, ok := splitRequestLine(line)
	if !ok {
		return n, ErrMalformed
	}

	var host, body, upgrade, connection, versionSeen, versionBad, keyRepeated bool
	for len(rest) > 0 {
		line, rest, ok = nextLine(rest)
		if !ok || len(line) == 0 || line[0] == ' ' || line[0] == '\t' {
			return n, ErrMalformed
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return n, ErrMalformed
		}
		name := line[:colon]
		for _, c := range name {
			if !isTchar(c) {
				return n, ErrMalformed
			}
		}
		value := trimOWS(line[colon+1:])
		for _, c := range value {
			if c < ' ' && c != '\t' || c == 0x7f {
				return n, ErrMalformed
			}
		}

		switch len(name) {
		case 4:
			if equalFold(name, "host") {
				if host || len(value) == 0 {
					return n, ErrMalformed
				}
				host = true
				r.Host = value
			}
		case 6:
			if equalFold(name, "origin") && r.Origin == nil {
				r.Origin = value
			}
		case 7:
			if equalFold(name, "upgrade") {
				upgrade = upgrade || hasToken(value, "websocket")
			}
		case 10:
			if equalFold(name, "connection") {
				connection = connection || hasToken(value, "upgrade")
			}
		case 14:
			if equalFold(name, "content-length") && string(value) != "0" {
				body = true
			}
		case 15:
			if equalFold(name, "x-forwarded-for") {
				r.XForwardedFor = value
			}
		case 17:
			if equalFold(name, "transfer-encoding") {
				body = true
			}
			if equalFold(name, "sec-websocket-key") {
				keyRepeated = r.Key != nil
				r.Key = value
			}
		case 21:
			if equalFold(name, "sec-websocket-version") {
				versionSeen = true
				versionBad = versionBad || string(value) != "13"
			}
		case 22:
			if equalFold(name, "sec-websocket-protocol") && r.Protocols == nil {
				r.Protocols = value
			}
		case 24:
			if equalFold(name, "sec-websocket-extensions") && !r.Deflate {
				r.Deflate = AcceptsDeflate(value)
			}
		}
		if r.NForward < MaxForward && forwarded(name) {
			r.Forward[r.NForward] = Header{Name: name, Value: value}
			r.NForward++
		}
	}

	if string(method) != "GET" {
		return n, ErrMethod
	}
	if string(version) != "HTTP/1.1" {
		return n, ErrHTTPVersion
	}
	if !host || body {
		return n, ErrMalformed
	}
	if !upgrade || !connection {
		return n, ErrNotUpgrade
	}
	if !versionSeen || versionBad {
		return n, ErrVersion
	}
	if keyRepeated || !validKey(r.Key) {
		return n, ErrKey
	}
	path := target[1:]
	if q := bytes.IndexByte(path, '?'); q >= 0 {
		r.Query = path[q+1:]
		path = path[:q]
	}
	if !ValidClientID(path) {
		return n, ErrClientID
	}
	r.ClientID = path
	return n, nil
}

var crlfcrlf = []byte("\r\n\r\n")

// nextLine splits the first line off p, which ends with "\r\n". It reports
// false for a bare CR or LF.
func nextLine(p []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(p, '\n')
	if i < 1 || p[i-1] != '\r' {
		return nil, nil, false
	}
	line, rest = p[:i-1], p[i+1:]
	return line, rest, bytes.IndexByte(line, '\r') < 0
}

// splitRequestLine checks the syntax of "method SP origin-form SP
// HTTP/d.d", leaving the values of method and version to the caller.
func splitRequestLine(line []byte) (method, target, version []byte, ok bool) {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return nil, nil, nil, false
	}
	method, line = line[:sp1], line[sp1+1:]
	for _, c := range method {
		if !isTchar(c) {
			return nil, nil, nil, false
		}
	}
	sp2 := bytes.IndexByte(line, ' ')
	if sp2 <= 0 {
		return nil, nil, nil, false
	}
	target, version = line[:sp2], line[sp2+1:]
	if target[0] != '/' {
		return nil, nil, nil, false
	}
	for _, c := range target {
		if c <= ' ' || c >= 0x7f || c == '#' {
			return nil, nil, nil, false
		}
	}
	if len(version) != 8 || string(version[:5]) != "HTTP/" || version[6] != '.' ||
		!isDigit(version[5]) || !isDigit(version[7]) {
		return nil, nil, nil, false
	}
	return method, target, version, true
}

// validKey reports whether key is the base64 of exactly 16 bytes. Like
// encoding/base64's default (non-strict) decoding, it ignores the unused
// low bits of the last character.
func validKey(key []byte) bool {
	if len(key) != 24 || key[22] != '=' || key[23] != '=' {
		return false
	}
	for _, c := range key[:22] {
		if !isBase64(c) {
			return false
		}
	}
	return true
}

func isBase64(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/'
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// isTchar reports whether c may appear in an HTTP token (RFC 9110, 5.6.2).
func isTchar(c byte) bool {
	return tchars[c>>6]&(1<<(c&63)) != 0
}

var tchars = func() (t [4]uint64) {
	for _, c := range []byte("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") {
		t[c>>6] |= 1 << (c & 63)
	}
	return t
}()

// forwarded reports whether name is on the ForwardHeaders allow-list.
func forwarded(name []byte) bool {
	for _, h := range ForwardHeaders {
		if equalFold(name, h) {
			return true
		}
	}
	return false
}

// equalFold reports whether b equals the lower-case ASCII string s, ignoring
// ASCII case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// trimOWS trims spaces and tabs from both ends of b.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// hasToken reports whether the comma-separated list holds tok, a lower-case
// token, ignoring ASCII case.
func hasToken(list []byte, tok string) bool {
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		if equalFold(trimOWS(item), tok) {
			return true
		}
	}
	return false
}

// reservedIDs are the admin API's own paths, never valid as a ClientId.
var reservedIDs = [...]string{"metrics", "healthz", "readyz", "debug"}

// ValidClientID reports whether id is a valid ClientId: 1 to MaxClientIDLen
// bytes of A-Z a-z 0-9 . _ ~ - (no percent-decoding, so no '%'), not "." or
// "..", and not one of the admin names "metrics", "healthz", "readyz" and
// "debug" (exact lower-case match).
func ValidClientID(id []byte) bool {
	if len(id) == 0 || len(id) > MaxClientIDLen {
		return false
	}
	for _, c := range id {
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	if string(id) == "." || string(id) == ".." {
		return false
	}
	for _, s := range reservedIDs {
		if string(id) == s {
			return false
		}
	}
	return true
}

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AppendAcceptKey appends the 28-byte Sec-WebSocket-Accept value for key
// (base64 of the SHA-1 of key and the RFC 6455 GUID) to dst and returns the
// extended slice. It does not allocate for keys up to 92 bytes.
func AppendAcceptKey(dst, key []byte) []byte {
	var buf [128]byte
	b := append(append(buf[:0], key...), acceptGUID...)
	sum := sha1.Sum(b)
	return base64.StdEncoding.AppendEncode(dst, sum[:])
}

// AppendSwitching appends the full "HTTP/1.1 101 Switching Protocols"
// response for key, with Upgrade, Connection and Sec-WebSocket-Accept, plus
// "Sec-WebSocket-Protocol: <protocol>" when protocol is not empty, to dst
// and returns the extended slice. protocol must be a token the client
// offered (see ProtocolOffered).
func AppendSwitching(dst, key, protocol []byte) []byte {
	return AppendSwitchingDeflate(dst, key, protocol, false)
}

// AppendSwitchingDeflate is AppendSwitching with, when deflate is set,
// "Sec-WebSocket-Extensions: " DeflateResponse (a permessage-deflate offer
// was accepted, see AcceptsDeflate).
func AppendSwitchingDeflate(dst, key, protocol []byte, deflate bool) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = AppendAcceptKey(dst, key)
	if len(protocol) > 0 {
		dst = append(dst, "\r\nSec-WebSocket-Protocol: "...)
		dst = append(dst, protocol...)
	}
	if deflate {
		dst = append(dst, "\r\nSec-WebSocket-Extensions: "+DeflateResponse...)
	}
	return append(dst, "\r\n\r\n"...)
}

// AppendResponse appends a complete HTTP/1.1 response to dst and returns the
// extended slice: the status line with the standard reason phrase,
// Content-Type (text/plain; charset=utf-8 when contentType is empty),
// Content-Length, "Connection: close", the extra headers, then body.
//
// A status outside 100-999 is written as 500. To rule out response
// splitting, a contentType holding control characters is replaced by the
// default, and an extra header whose name is not a token or whose value
// holds control characters other than tab is left out.
func AppendResponse(dst []byte, status int, contentType []byte, extra []Header, body []byte) []byte {
	dst = appendHead(dst, status, contentType, extra, len(body))
	return append(dst, body...)
}

// appendHead appends everything of a response but its body.
func appendHead(dst []byte, status int, contentType []byte, extra []Header, length int) []byte {
	if status < 100 || status > 999 {
		status = http.StatusInternalServerError
	}
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	dst = append(dst, http.StatusText(status)...)
	dst = append(dst, "\r\nContent-Type: "...)
	if len(contentType) == 0 || !validValue(contentType) {
		dst = append(dst, "text/plain; charset=utf-8"...)
	} else {
		dst = append(dst, contentType...)
	}
	dst = append(dst, "\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(length), 10)
	dst = append(dst, "\r\nConnection: close\r\n"...)
	for _, h := range extra {
		if !validName(h.Name) || !validValue(h.Value) {
			continue
		}
		dst = append(dst, h.Name...)
		dst = append(dst, ": "...)
		dst = append(dst, h.Value...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}

func validName(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isTchar(c) {
			return false
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// Extra headers of refusals.
var (
	refusalVersion = []Header{
		{Name: []byte("Upgrade"), Value: []byte("websocket")},
		{Name: []byte("Sec-WebSocket-Version"), Value: []byte("13")},
	}
	refusalUpgrade = []Header{{Name: []byte("Upgrade"), Value: []byte("websocket")}}
	refusalAllow   = []Header{{Name: []byte("Allow"), Value: []byte("GET")}}
	refusalNil     = &HTTPError{http.StatusInternalServerError, "internal error"}
)

// AppendRefusal appends the response for a refusal e to dst and returns the
// extended slice: AppendResponse with e.Status and e.Reason+"\n" as body,
// plus "Sec-WebSocket-Version: 13" for ErrVersion, "Upgrade: websocket" for
// any 426, and "Allow: GET" for any 405. A nil e is answered with 500.
func AppendRefusal(dst []byte, e *HTTPError) []byte {
	if e == nil {
		e = refusalNil
	}
	var extra []Header
	switch {
	case e == ErrVersion:
		extra = refusalVersion
	case e.Status == http.StatusUpgradeRequired:
		extra = refusalUpgrade
	case e.Status == http.StatusMethodNotAllowed:
		extra = refusalAllow
	}
	dst = appendHead(dst, e.Status, nil, extra, len(e.Reason)+1)
	dst = append(dst, e.Reason...)
	return append(dst, '\n')
}

// ProtocolOffered reports whether proto is one of the comma-separated tokens
// in offered (case-sensitive, trimmed of spaces and tabs). An empty proto is
// never offered.
func ProtocolOffered(offered, proto []byte) bool {
	if len(proto) == 0 {
		return false
	}
	for len(offered) > 0 {
		var item []byte
		if i := bytes.IndexByte(offered, ','); i >= 0 {
			item, offered = offered[:i], offered[i+1:]
		} else {
			item, offered = offered, nil
		}
		if bytes.Equal(trimOWS(item), proto) {
			return true
		}
	}
	return false
}
