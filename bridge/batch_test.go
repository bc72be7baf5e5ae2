package bridge

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// readRecords is a reader of batch requests written the way a backend
// author would, independent of the encoder.
func readRecords(t testing.TB, body []byte) (recs [][6]string, payloads [][]byte) {
	t.Helper()
	for len(body) > 0 {
		nl := bytes.IndexByte(body, '\n')
		if nl < 0 {
			t.Fatalf("no header line in %q", body)
		}
		f := bytes.Split(body[:nl], []byte(" "))
		if len(f) != 6 {
			t.Fatalf("header %q: %d fields, want 6", body[:nl], len(f))
		}
		n, err := strconv.Atoi(string(f[4]))
		if err != nil {
			t.Fatal(err)
		}
		body = body[nl+1:]
		payloads = append(payloads, body[:n])
		if body[n] != '\n' {
			t.Fatalf("no newline after the payload")
		}
		body = body[n+1:]
		recs = append(recs, [6]string{string(f[0]), string(f[1]), string(f[2]), string(f[3]), string(f[4]), string(f[5])})
	}
	return recs, payloads
}

func TestBatchRecordEncoding(t *testing.T) {
	c, err := New(Config{Backend: "http://127.0.0.1:1/api/", BatchURL: "http://127.0.0.1:1/api/batch"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msgs := []struct {
		id     string
		binary bool
		body   []byte
		meta   [][2]string
	}{
		{"alice", false, []byte("hello"), nil},
		{"bob.2", true, []byte("a\x00b\nc\r\n\xff\xfe 7 text\n"), [][2]string{{"User-Id", "42"}, {"Room", "a b&c=d+e%"}}},
		{"c", false, []byte(""), nil},
	}
	var buf []byte
	for i, m := range msgs {
		call := AcquireCall()
		c.PreparePOST(call, Ids{ClientID: []byte(m.id), ConnID: []byte("p-" + strconv.Itoa(i+1))}, m.binary)
		call.Req.AppendBody(m.body)
		call.seq = uint32(i + 2)
		for _, kv := range m.meta {
			call.Req.Header.SetCanonical([]byte(metaPrefix+kv[0]), []byte(kv[1]))
		}
		buf = c.bat.appendRecord(buf, call)
		ReleaseCall(call)
	}
	recs, payloads := readRecords(t, buf)
	want := [][6]string{
		{"text", "alice", "p-1", "2", "5", "-"},
		{"binary", "bob.2", "p-2", "3", "17", "User-Id=42&Room=a%20b%26c%3Dd%2Be%25"},
		{"text", "c", "p-3", "4", "0", "-"},
	}
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d: %q", len(recs), len(want), buf)
	}
	for i := range want {
		if recs[i] != want[i] {
			t.Errorf("record %d: %q, want %q", i, recs[i], want[i])
		}
		if !bytes.Equal(payloads[i], msgs[i].body) {
			t.Errorf("record %d: payload %q, want %q", i, payloads[i], msgs[i].body)
		}
	}
}

func TestParseBatchReply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		body   string
		n      int
		want   []batchReply
		extra  bool
		errSub bool
	}{
		{"two", "text 2\nhi\nbinary 3\n\x00\n\xff\n", 2, []batchReply{{body: []byte("hi")}, {binary: true, body: []byte("\x00\n\xff")}}, false, false},
		{"crlf and meta", "text 0 User-Id=42\r\n\ntext 1\nx", 2, []batchReply{{meta: []byte("User-Id=42")}, {body: []byte("x")}}, false, false},
		{"fewer", "text 1\na\n", 3, []batchReply{{body: []byte("a")}}, false, false},
		{"empty", "", 2, nil, false, false},
		{"more", "text 1\na\ntext 1\nb\n", 1, []batchReply{{body: []byte("a")}}, true, false},
		{"blank line at the end", "text 1\na\n\n", 2, []batchReply{{body: []byte("a")}}, false, false},
		{"bad kind", "json 1\na\n", 1, nil, false, true},
		{"bad length", "text x\na\n", 1, nil, false, true},
		{"negative", "text -1\na\n", 1, nil, false, true},
		{"too long", "text 5\nab\n", 1, nil, false, true},
		{"no newline after", "text 1\nab\n", 1, nil, false, true},
		{"no header", "text 1", 1, nil, false, true},
		{"html error page", "<html>oops</html>", 1, nil, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, extra, err := parseBatchReply([]byte(tc.body), tc.n, nil)
			if tc.errSub {
				if !errors.Is(err, ErrBatchReply) {
					t.Fatalf("err %v, want ErrBatchReply", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if extra != tc.extra {
				t.Errorf("extra %v, want %v", extra, tc.extra)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d replies, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.binary != w.binary || !bytes.Equal(g.body, w.body) || !bytes.Equal(g.meta, w.meta) {
					t.Errorf("reply %d: %+v, want %+v", i, g, w)
				}
			}
		})
	}
}

func TestSetMetaHeaders(t *testing.T) {
	var h fasthttp.ResponseHeader
	before := MetaRejected()
	setMetaHeaders(&h, []byte("User-Id=42&Room=a+b%20c&bad=%zz&=x&Gone="))
	if got := string(h.Peek("Wsbridge-Set-Meta-User-Id")); got != "42" {
		t.Errorf("User-Id %q", got)
	}
	if got := string(h.Peek("Wsbridge-Set-Meta-Room")); got != "a b c" {
		t.Errorf("Room %q", got)
	}
	if v := h.Peek("Wsbridge-Set-Meta-Gone"); v == nil || len(v) != 0 {
		t.Errorf("Gone %q, want present and empty (a delete)", v)
	}
	if n := MetaRejected() - before; n != 2 {
		t.Errorf("rejected %d, want 2", n)
	}
}

func TestBatchURLMustShareHost(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:2/batch", "https://127.0.0.1:1/batch", "http://[::1]:1/batch"} {
		if _, err := New(Config{Backend: "http://127.0.0.1:1/", BatchURL: u}); !errors.Is(err, ErrBadBackend) {
			t.Errorf("%s: err %v, want ErrBadBackend", u, err)
		}
	}
}

// appendReply writes one reply the way the docs tell a backend to.
func appendReply(dst []byte, r batchReply) []byte {
	kind := "text"
	if r.binary {
		kind = "binary"
	}
	dst = fmt.Appendf(dst, "%s %d", kind, len(r.body))
	if len(r.meta) > 0 {
		dst = append(append(dst, ' '), r.meta...)
	}
	dst = append(dst, '\n')
	dst = append(dst, r.body...)
	return append(dst, '\n')
}

// FuzzBatchReply: the parser never panics, never reads past the answer,
// returns at most n replies, and what it returns encodes back to a prefix
// of an answer that parses to the same replies.
func FuzzBatchReply(f *testing.F) {
	f.Add([]byte("text 2\nhi\nbinary 3\n\x00\n\xff\n"), 2)
	f.Add([]byte("text 0 User-Id=42\r\n\ntext 1\nx"), 3)
	f.Add([]byte("text 1\na\ntext 1\nb\n"), 1)
	f.Add([]byte("text 99999999999\n"), 1)
	f.Add([]byte("binary 1 \n\n\n"), 1)
	f.Fuzz(func(t *testing.T, body []byte, n int) {
		n = max(0, n%300)
		got, _, err := parseBatchReply(body, n, nil)
		if err != nil {
			if !errors.Is(err, ErrBatchReply) {
				t.Fatalf("error %v is not ErrBatchReply", err)
			}
			return
		}
		if len(got) > n {
			t.Fatalf("%d replies for %d messages", len(got), n)
		}
		var re []byte
		for _, r := range got {
			if len(r.body) > len(body) || bytes.IndexByte(r.meta, '\n') >= 0 {
				t.Fatalf("reply out of the answer: %+v", r)
			}
			if len(r.meta) > 0 && r.meta[len(r.meta)-1] == '\r' {
				return // "\r\r\n": written back it would lose a CR
			}
			re = appendReply(re, r)
		}
		again, extra, err := parseBatchReply(re, n, nil)
		if err != nil || extra || len(again) != len(got) {
			t.Fatalf("re-encoded %q: %d replies, extra %v, err %v; want %d", re, len(again), extra, err, len(got))
		}
		for i := range got {
			if again[i].binary != got[i].binary || !bytes.Equal(again[i].body, got[i].body) || !bytes.Equal(again[i].meta, got[i].meta) {
				t.Fatalf("reply %d: %+v after re-encoding, want %+v", i, again[i], got[i])
			}
		}
		if len(got) > 0 {
			setMetaHeaders(&fasthttp.ResponseHeader{}, got[0].meta) // no panic on any field
		}
	})
}

// TestBatchTimerIdle: a batch leaves after the delay with nothing else
// happening, and an idle batcher holds no armed timer.
func TestBatchTimerIdle(t *testing.T) {
	c, err := New(Config{Backend: "http://127.0.0.1:1/", BatchURL: "http://127.0.0.1:1/batch", BatchDelay: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b := c.bat
	b.mu.Lock()
	armed := b.armed
	b.mu.Unlock()
	if armed {
		t.Fatal("timer armed before any message")
	}
}
