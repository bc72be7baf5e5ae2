package protocol_test

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/protocol"
)

// rfcKey and rfcAccept are the example of RFC 6455, section 1.3.
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

// upgrade builds a request head from a request line and header lines.
func upgrade(line string, headers ...string) string {
	return line + "\r\n" + strings.Join(headers, "\r\n") + "\r\n\r\n"
}

// std are the headers of a minimal valid upgrade.
var std = []string{
	"Host: example.com",
	"Upgrade: websocket",
	"Connection: Upgrade",
	"Sec-WebSocket-Key: " + rfcKey,
	"Sec-WebSocket-Version: 13",
}

// except returns std without the headers whose names start with drop, plus add.
func except(drop string, add ...string) []string {
	var h []string
	for _, s := range std {
		if drop == "" || !strings.HasPrefix(s, drop) {
			h = append(h, s)
		}
	}
	return append(h, add...)
}

// wantRequest is the expected outcome of a valid request; "<nil>" stands for
// a nil slice.
type wantRequest struct {
	id, query, host, key, origin, protocols, xff string
	forward                                      []string // "Name: Value"
}

// requestCase is one request head and what parsing it must give. The table
// drives TestParseRequest, BenchmarkParseRequest (bench cases) and the fuzz
// corpus.
type requestCase struct {
	name  string
	req   string
	err   error
	want  *wantRequest // checked when err is nil
	bench bool
}

const browserRequest = "GET /user-42.session_1~x?token=abc&v=2 HTTP/1.1\r\n" +
	"Host: ws.example.com:7001\r\n" +
	"Connection: keep-alive, Upgrade\r\n" +
	"Pragma: no-cache\r\n" +
	"Cache-Control: no-cache\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n" +
	"Upgrade: websocket\r\n" +
	"Origin: https://app.example.com\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Cookie: session=0123456789abcdef; theme=dark\r\n" +
	"Sec-WebSocket-Key: " + rfcKey + "\r\n" +
	"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" +
	"Sec-WebSocket-Protocol: chat, superchat\r\n" +
	"\r\n"

var requestCases = []requestCase{
	{
		name: "minimal", req: upgrade("GET /abc HTTP/1.1", std...), bench: true,
		want: &wantRequest{id: "abc", query: "<nil>", host: "example.com", key: rfcKey, origin: "<nil>", protocols: "<nil>", xff: "<nil>"},
	},
	{
		name: "browser", req: browserRequest, bench: true,
		want: &wantRequest{
			id: "user-42.session_1~x", query: "token=abc&v=2", host: "ws.example.com:7001", key: rfcKey,
			origin: "https://app.example.com", protocols: "chat, superchat", xff: "<nil>",
			forward: []string{
				"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
				"Origin: https://app.example.com", "Accept-Language: en-US,en;q=0.9",
				"Cookie: session=0123456789abcdef; theme=dark", "Sec-WebSocket-Protocol: chat, superchat",
			},
		},
	},
	{
		name: "case-insensitive names and tokens",
		req: upgrade("GET /A HTTP/1.1", "HOST: h", "upgrade: WebSocket", "CONNECTION: keep-alive,UPGRADE",
			"sec-websocket-key:"+rfcKey, "SEC-WEBSOCKET-VERSION:   13  ", "x-request-id: r1", "AUTHORIZATION: Bearer t"),
		want: &wantRequest{id: "A", query: "<nil>", host: "h", key: rfcKey, origin: "<nil>", protocols: "<nil>", xff: "<nil>",
			forward: []string{"x-request-id: r1", "AUTHORIZATION: Bearer t"}},
	},
	{
		name: "tokens over several lines",
		req: upgrade("GET /a HTTP/1.1", "Host: h", "Upgrade: h2c", "Upgrade: websocket", "Connection: keep-alive",
			"Connection: upgrade", "Sec-WebSocket-Key: "+rfcKey, "Sec-WebSocket-Version: 13"),
		want: &wantRequest{id: "a", query: "<nil>", host: "h", key: rfcKey, origin: "<nil>", protocols: "<nil>", xff: "<nil>"},
	},
	{
		name: "empty query and forwarded-for",
		req:  upgrade("GET /a? HTTP/1.1", except("", "X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 10.0.0.2, 10.0.0.3", "Referer: https://r/", "Content-Length: 0")...),
		want: &wantRequest{id: "a", query: "", host: "example.com", key: rfcKey, origin: "<nil>", protocols: "<nil>",
			xff: "10.0.0.2, 10.0.0.3", forward: []string{"Referer: https://r/"}},
	},
	{
		name: "more allow-listed headers than MaxForward",
		req:  upgrade("GET /a HTTP/1.1", except("", strings.Split(strings.Repeat("Cookie: c\n", 20), "\n")[:20]...)...),
		want: &wantRequest{id: "a", query: "<nil>", host: "example.com", key: rfcKey, origin: "<nil>", protocols: "<nil>", xff: "<nil>",
			forward: strings.Split(strings.Repeat("Cookie: c\n", 16), "\n")[:16]},
	},
	{
		name: "128-byte client id", req: upgrade("GET /"+strings.Repeat("a", 128)+" HTTP/1.1", std...),
		want: &wantRequest{id: strings.Repeat("a", 128), query: "<nil>", host: "example.com", key: rfcKey, origin: "<nil>", protocols: "<nil>", xff: "<nil>"},
	},
	{
		name: "admin-like but valid ids", req: upgrade("GET /Metrics?x HTTP/1.1", std...),
		want: &wantRequest{id: "Metrics", query: "x", host: "example.com", key: rfcKey, origin: "<nil>", protocols: "<nil>", xff: "<nil>"},
	},

	{name: "missing key", req: upgrade("GET /a HTTP/1.1", except("Sec-WebSocket-Key")...), err: protocol.ErrKey},
	{name: "short key", req: upgrade("GET /a HTTP/1.1", except("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ")...), err: protocol.ErrKey},
	{name: "key of 17 bytes", req: upgrade("GET /a HTTP/1.1", except("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZSE=")...), err: protocol.ErrKey},
	{name: "key not base64", req: upgrade("GET /a HTTP/1.1", except("Sec-WebSocket-Key", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25*ZQ==")...), err: protocol.ErrKey},
	{name: "repeated key", req: upgrade("GET /a HTTP/1.1", except("", "Sec-WebSocket-Key: "+rfcKey)...), err: protocol.ErrKey},
	{name: "empty client id", req: upgrade("GET / HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "empty client id with query", req: upgrade("GET /?a=b HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "129-byte client id", req: upgrade("GET /"+strings.Repeat("a", 129)+" HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "percent in client id", req: upgrade("GET /%41 HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "dot client id", req: upgrade("GET /. HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "dot-dot client id", req: upgrade("GET /.. HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "metrics client id", req: upgrade("GET /metrics HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "healthz client id", req: upgrade("GET /healthz?x HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "readyz client id", req: upgrade("GET /readyz HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "debug client id", req: upgrade("GET /debug HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "slash in client id", req: upgrade("GET /a/b HTTP/1.1", std...), err: protocol.ErrClientID},
	{name: "space in client id", req: upgrade("GET /a b HTTP/1.1", std...), err: protocol.ErrMalformed},
	{name: "utf-8 in client id", req: upgrade("GET /é HTTP/1.1", std...), err: protocol.ErrMalformed},
	{name: "POST", req: upgrade("POST /a HTTP/1.1", std...), err: protocol.ErrMethod},
	{name: "POST with body", req: upgrade("POST /a HTTP/1.1", except("", "Content-Length: 5")...) + "hello", err: protocol.ErrMethod},
	{name: "lower-case get", req: upgrade("get /a HTTP/1.1", std...), err: protocol.ErrMethod},
	{name: "HTTP/1.0", req: upgrade("GET /a HTTP/1.0", std...), err: protocol.ErrHTTPVersion},
	{name: "HTTP/2.0", req: upgrade("GET /a HTTP/2.0", std...), err: protocol.ErrHTTPVersion},
	{name: "version 8", req: upgrade("GET /a HTTP/1.1", except("Sec-WebSocket-Version", "Sec-WebSocket-Version: 8")...), err: protocol.ErrVersion},
	{name: "version missing", req: upgrade("GET /a HTTP/1.1", except("Sec-WebSocket-Version")...), err: protocol.ErrVersion},
	{name: "version 13 and 8", req: upgrade("GET /a HTTP/1.1", except("", "Sec-WebSocket-Version: 8")...), err: protocol.ErrVersion},
	{name: "plain GET", req: upgrade("GET /a HTTP/1.1", "Host: h", "Accept: */*"), err: protocol.ErrNotUpgrade},
	{name: "plain GET of the root", req: upgrade("GET / HTTP/1.1", "Host: h"), err: protocol.ErrNotUpgrade},
	{name: "no upgrade in Connection", req: upgrade("GET /a HTTP/1.1", except("Connection", "Connection: keep-alive")...), err: protocol.ErrNotUpgrade},
	{name: "Upgrade h2c", req: upgrade("GET /a HTTP/1.1", except("Upgrade", "Upgrade: h2c")...), err: protocol.ErrNotUpgrade},
	{name: "missing Host", req: upgrade("GET /a HTTP/1.1", except("Host")...), err: protocol.ErrMalformed},
	{name: "empty Host", req: upgrade("GET /a HTTP/1.1", except("Host", "Host: ")...), err: protocol.ErrMalformed},
	{name: "repeated Host", req: upgrade("GET /a HTTP/1.1", except("", "Host: other")...), err: protocol.ErrMalformed},
	{name: "chunked body", req: upgrade("GET /a HTTP/1.1", except("", "Transfer-Encoding: chunked")...), err: protocol.ErrMalformed},
	{name: "content length", req: upgrade("GET /a HTTP/1.1", except("", "Content-Length: 3")...) + "abc", err: protocol.ErrMalformed},
	{name: "bare LF", req: "GET /a HTTP/1.1\nHost: h\r\n\r\n", err: protocol.ErrMalformed},
	{name: "bare LF in header", req: upgrade("GET /a HTTP/1.1", except("", "X-A: a\nb")...), err: protocol.ErrMalformed},
	{name: "bare CR in header", req: upgrade("GET /a HTTP/1.1", except("", "X-A: a\rb")...), err: protocol.ErrMalformed},
	{name: "NUL in header", req: upgrade("GET /a HTTP/1.1", except("", "X-A: a\x00b")...), err: protocol.ErrMalformed},
	{name: "header without colon", req: upgrade("GET /a HTTP/1.1", except("", "X-A")...), err: protocol.ErrMalformed},
	{name: "empty header name", req: upgrade("GET /a HTTP/1.1", except("", ": v")...), err: protocol.ErrMalformed},
	{name: "space before colon", req: upgrade("GET /a HTTP/1.1", except("", "X-A : v")...), err: protocol.ErrMalformed},
	{name: "obs-fold", req: upgrade("GET /a HTTP/1.1", except("", "X-A: v", " folded")...), err: protocol.ErrMalformed},
	{name: "absolute-form target", req: upgrade("GET http://h/a HTTP/1.1", std...), err: protocol.ErrMalformed},
	{name: "asterisk target", req: upgrade("OPTIONS * HTTP/1.1", std...), err: protocol.ErrMalformed},
	{name: "fragment in target", req: upgrade("GET /a?b#c HTTP/1.1", std...), err: protocol.ErrMalformed},
	{name: "missing version", req: upgrade("GET /a", std...), err: protocol.ErrMalformed},
	{name: "double space", req: upgrade("GET  /a HTTP/1.1", std...), err: protocol.ErrMalformed},
	{name: "bad version syntax", req: upgrade("GET /a HTTX/1.1", std...), err: protocol.ErrMalformed},
	{name: "empty request line", req: upgrade("", std...), err: protocol.ErrMalformed},
	{name: "garbage", req: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", err: protocol.ErrMalformed},
	{name: "head over 8 KiB", req: upgrade("GET /a HTTP/1.1", except("", "X-Pad: "+strings.Repeat("p", 8192))...), err: protocol.ErrHeaderTooLarge},
	{name: "8 KiB without end", req: "GET /a HTTP/1.1\r\nX-Pad: " + strings.Repeat("p", 8192), err: protocol.ErrHeaderTooLarge},
}

// padTo returns a valid request head of exactly n bytes.
func padTo(n int) string {
	r := upgrade("GET /a HTTP/1.1", except("", "X-Pad: ")...)
	return upgrade("GET /a HTTP/1.1", except("", "X-Pad: "+strings.Repeat("p", n-len(r)))...)
}

func checkRequest(t *testing.T, r *protocol.Request, w *wantRequest) {
	t.Helper()
	field := func(name string, got []byte, want string) {
		t.Helper()
		s := string(got)
		if got == nil {
			s = "<nil>"
		}
		if s != want {
			t.Errorf("%s: got %q, want %q", name, s, want)
		}
	}
	field("ClientID", r.ClientID, w.id)
	field("Query", r.Query, w.query)
	field("Host", r.Host, w.host)
	field("Key", r.Key, w.key)
	field("Origin", r.Origin, w.origin)
	field("Protocols", r.Protocols, w.protocols)
	field("XForwardedFor", r.XForwardedFor, w.xff)
	var fwd []string
	for _, h := range r.Forward[:r.NForward] {
		fwd = append(fwd, string(h.Name)+": "+string(h.Value))
	}
	if !equalStrings(fwd, w.forward) {
		t.Errorf("Forward:\ngot  %q\nwant %q", fwd, w.forward)
	}
}

func TestParseRequest(t *testing.T) {
	for _, c := range requestCases {
		t.Run(c.name, func(t *testing.T) {
			// Bytes after the head (the first frames) are not part of it.
			in := []byte(c.req + "\x81\x80trailing")
			r := protocol.Request{NForward: 99, Query: []byte("stale")}
			n, err := protocol.ParseRequest(in, &r)
			if err != c.err {
				t.Fatalf("error: got %v, want %v", err, c.err)
			}
			if err == protocol.ErrHeaderTooLarge || err == protocol.ErrIncomplete {
				if n != 0 {
					t.Fatalf("n: got %d, want 0", n)
				}
				return
			}
			if wantN := strings.Index(c.req, "\r\n\r\n") + 4; n != wantN {
				t.Fatalf("n: got %d, want %d", n, wantN)
			}
			if err != nil {
				return
			}
			checkRequest(t, &r, c.want)
			// Every prefix of a valid head is incomplete.
			for i := range n {
				if _, err := protocol.ParseRequest(in[:i], &r); err != protocol.ErrIncomplete {
					t.Fatalf("prefix of %d bytes: got %v, want %v", i, err, protocol.ErrIncomplete)
				}
			}
		})
	}
}

func TestParseRequestSizeLimit(t *testing.T) {
	var r protocol.Request
	req := padTo(protocol.MaxHeaderBytes)
	if n, err := protocol.ParseRequest([]byte(req+"more"), &r); err != nil || n != protocol.MaxHeaderBytes {
		t.Fatalf("head of MaxHeaderBytes: got %d %v, want %d nil", n, err, protocol.MaxHeaderBytes)
	}
	req = padTo(protocol.MaxHeaderBytes + 1)
	if _, err := protocol.ParseRequest([]byte(req), &r); err != protocol.ErrHeaderTooLarge {
		t.Fatalf("head of MaxHeaderBytes+1: got %v, want %v", err, protocol.ErrHeaderTooLarge)
	}
	// Without its end, the head is incomplete up to the limit.
	if _, err := protocol.ParseRequest([]byte(req[:protocol.MaxHeaderBytes]), &r); err != protocol.ErrIncomplete {
		t.Fatalf("MaxHeaderBytes without end: got %v, want %v", err, protocol.ErrIncomplete)
	}
	if _, err := protocol.ParseRequest([]byte(req[:protocol.MaxHeaderBytes+1]), &r); err != protocol.ErrHeaderTooLarge {
		t.Fatalf("MaxHeaderBytes+1 without end: got %v, want %v", err, protocol.ErrHeaderTooLarge)
	}
}

func TestValidClientID(t *testing.T) {
	for id, want := range map[string]bool{
		"a": true, "A-Z_a.z~0-9": true, "...": true, ".a": true, strings.Repeat("x", 128): true,
		"Metrics": true, "metricsx": true, "debug2": true,
		"": false, ".": false, "..": false, strings.Repeat("x", 129): false, "%41": false, "a/b": false,
		"a b": false, "a?b": false, "metrics": false, "healthz": false, "readyz": false, "debug": false,
		"é": false, "a\x00": false, "a+b": false,
	} {
		if got := protocol.ValidClientID([]byte(id)); got != want {
			t.Errorf("ValidClientID(%q): got %v, want %v", id, got, want)
		}
	}
}

func TestAppendAcceptKey(t *testing.T) {
	if got := string(protocol.AppendAcceptKey([]byte("x"), []byte(rfcKey))); got != "x"+rfcAccept {
		t.Fatalf("AppendAcceptKey(RFC example): got %q, want %q", got, "x"+rfcAccept)
	}
	for _, key := range []string{"", "AAAAAAAAAAAAAAAAAAAAAA==", strings.Repeat("k", 92), strings.Repeat("k", 300)} {
		sum := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		want := base64.StdEncoding.EncodeToString(sum[:])
		if got := string(protocol.AppendAcceptKey(nil, []byte(key))); got != want {
			t.Errorf("AppendAcceptKey(%d-byte key): got %q, want %q", len(key), got, want)
		}
	}
}

// readResponse parses an HTTP response with net/http, so our writers are
// checked by an independent parser.
func readResponse(t *testing.T, raw []byte) (*http.Response, string) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("http.ReadResponse(%q): %v", raw, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body of %q: %v", raw, err)
	}
	if br.Buffered() != 0 {
		t.Fatalf("bytes after the response: got %d, want 0", br.Buffered())
	}
	return resp, string(body)
}

func TestAppendSwitching(t *testing.T) {
	for _, proto := range []string{"", "chat"} {
		raw := protocol.AppendSwitching(nil, []byte(rfcKey), []byte(proto))
		resp, _ := readResponse(t, raw)
		if resp.StatusCode != 101 {
			t.Errorf("status: got %d, want 101", resp.StatusCode)
		}
		for name, want := range map[string]string{
			"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": rfcAccept, "Sec-WebSocket-Protocol": proto,
		} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%s: got %q, want %q", name, got, want)
			}
		}
		if _, ok := resp.Header["Sec-Websocket-Protocol"]; ok != (proto != "") {
			t.Errorf("Sec-WebSocket-Protocol present: got %v, want %v", ok, proto != "")
		}
	}
}

func TestAppendRefusal(t *testing.T) {
	for _, tc := range []struct {
		err    *protocol.HTTPError
		status int
		header map[string]string
	}{
		{protocol.ErrHeaderTooLarge, 431, nil},
		{protocol.ErrMalformed, 400, nil},
		{protocol.ErrMethod, 405, map[string]string{"Allow": "GET"}},
		{protocol.ErrHTTPVersion, 505, nil},
		{protocol.ErrNotUpgrade, 426, map[string]string{"Upgrade": "websocket"}},
		{protocol.ErrVersion, 426, map[string]string{"Sec-WebSocket-Version": "13", "Upgrade": "websocket"}},
		{protocol.ErrKey, 400, nil},
		{protocol.ErrClientID, 400, nil},
		{&protocol.HTTPError{Status: 503, Reason: "overloaded"}, 503, nil},
		{nil, 500, nil},
	} {
		raw := protocol.AppendRefusal(nil, tc.err)
		resp, body := readResponse(t, raw)
		if resp.StatusCode != tc.status {
			t.Errorf("%v: status: got %d, want %d", tc.err, resp.StatusCode, tc.status)
		}
		if want := http.StatusText(tc.status); !strings.HasSuffix(resp.Status, want) {
			t.Errorf("%v: status line: got %q, want reason %q", tc.err, resp.Status, want)
		}
		if tc.err != nil && body != tc.err.Reason+"\n" {
			t.Errorf("%v: body: got %q, want %q", tc.err, body, tc.err.Reason+"\n")
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("%v: Content-Type: got %q, want text/plain; charset=utf-8", tc.err, got)
		}
		if !resp.Close {
			t.Errorf("%v: Connection: got keep-alive, want close", tc.err)
		}
		for name, want := range tc.header {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("%v: %s: got %q, want %q", tc.err, name, got, want)
			}
		}
		if tc.err != nil && tc.err != protocol.ErrVersion && resp.Header.Get("Sec-WebSocket-Version") != "" {
			t.Errorf("%v: unexpected Sec-WebSocket-Version header", tc.err)
		}
	}
}

func TestAppendResponse(t *testing.T) {
	extra := []protocol.Header{
		{Name: []byte("WWW-Authenticate"), Value: []byte(`Bearer realm="x"`)},
		{Name: []byte("Retry-After"), Value: []byte("5")},
		{Name: []byte("X-Evil"), Value: []byte("a\r\nSet-Cookie: x=1")},
		{Name: []byte("Bad Name"), Value: []byte("v")},
		{Name: nil, Value: []byte("v")},
	}
	raw := protocol.AppendResponse([]byte{}, 401, []byte("application/json"), extra, []byte(`{"e":1}`))
	resp, body := readResponse(t, raw)
	if resp.StatusCode != 401 || body != `{"e":1}` {
		t.Errorf("got %d %q, want 401 %q", resp.StatusCode, body, `{"e":1}`)
	}
	for name, want := range map[string]string{
		"Content-Type": "application/json", "WWW-Authenticate": `Bearer realm="x"`, "Retry-After": "5",
		"X-Evil": "", "Set-Cookie": "", "Content-Length": "7",
	} {
		if got := resp.Header.Get(name); got != want {
			t.Errorf("%s: got %q, want %q", name, got, want)
		}
	}
	if resp.ContentLength != 7 {
		t.Errorf("Content-Length: got %d, want 7", resp.ContentLength)
	}
	for _, status := range []int{200, 403, 502, 504, 599, 0, 1000} {
		raw := protocol.AppendResponse(nil, status, []byte("x\r\ny: z"), nil, nil)
		resp, _ := readResponse(t, raw)
		want := status
		if status < 100 || status > 999 {
			want = 500
		}
		if resp.StatusCode != want {
			t.Errorf("status %d: got %d, want %d", status, resp.StatusCode, want)
		}
		if got := resp.Header.Get("Content-Type"); got != "text/plain; charset=utf-8" {
			t.Errorf("bad content type: got %q, want the default", got)
		}
	}
}

func TestProtocolOffered(t *testing.T) {
	for _, tc := range []struct {
		offered, proto string
		want           bool
	}{
		{"chat, superchat", "chat", true},
		{"chat, superchat", "superchat", true},
		{"chat,superchat", "superchat", true},
		{" chat\t,superchat ", "chat", true},
		{"chat, superchat", "Chat", false},
		{"chat, superchat", "super", false},
		{"chat", "", false},
		{"", "", false},
		{",,", "", false},
		{"", "chat", false},
	} {
		if got := protocol.ProtocolOffered([]byte(tc.offered), []byte(tc.proto)); got != tc.want {
			t.Errorf("ProtocolOffered(%q, %q): got %v, want %v", tc.offered, tc.proto, got, tc.want)
		}
	}
}

func TestHTTPErrorText(t *testing.T) {
	for _, e := range []*protocol.HTTPError{protocol.ErrHeaderTooLarge, protocol.ErrMalformed, protocol.ErrMethod,
		protocol.ErrHTTPVersion, protocol.ErrNotUpgrade, protocol.ErrVersion, protocol.ErrKey, protocol.ErrClientID} {
		if msg := e.Error(); !strings.HasPrefix(msg, "protocol: ") || strings.ToLower(msg) != msg {
			t.Errorf("error text: got %q, want lower case with prefix \"protocol: \"", msg)
		}
	}
	if msg := fmt.Sprint(protocol.ErrIncomplete); !strings.HasPrefix(msg, "protocol: ") {
		t.Errorf("ErrIncomplete text: got %q, want prefix \"protocol: \"", msg)
	}
}
