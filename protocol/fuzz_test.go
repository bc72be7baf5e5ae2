package protocol_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/wsbridge/wsbridge/protocol"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the seed corpus in testdata/fuzz from the case tables")

// closeSentinels are all the errors Decoder.Next may return.
var closeSentinels = []error{
	protocol.ErrUnmasked, protocol.ErrReservedBits, protocol.ErrReservedOpCode, protocol.ErrControlTooBig,
	protocol.ErrControlFragmented, protocol.ErrUnexpectedContinuation, protocol.ErrExpectedContinuation,
	protocol.ErrBadLength, protocol.ErrClosePayload, protocol.ErrCloseCode, protocol.ErrInvalidUTF8, protocol.ErrTooBig,
}

// httpSentinels are all the errors ParseRequest may return.
var httpSentinels = []error{
	protocol.ErrIncomplete, protocol.ErrHeaderTooLarge, protocol.ErrMalformed, protocol.ErrMethod,
	protocol.ErrHTTPVersion, protocol.ErrNotUpgrade, protocol.ErrVersion, protocol.ErrKey, protocol.ErrClientID,
}

func isOneOf(err error, list []error) bool {
	for _, e := range list {
		if err == e {
			return true
		}
	}
	return false
}

// splitRandom cuts data into pieces of 0 to 20 bytes chosen by seed.
func splitRandom(data []byte, seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var pieces [][]byte
	for len(data) > 0 {
		k := min(rng.IntN(21), len(data))
		pieces = append(pieces, data[:k])
		data = data[k:]
	}
	return pieces
}

// FuzzDecoder feeds arbitrary bytes whole and in random pieces: decoding
// must never panic, both ways must give the same messages, control frames
// and error, and an error is always one of the *CloseError sentinels.
func FuzzDecoder(f *testing.F) {
	for i, c := range frameCases {
		if len(c.in) <= 4096 {
			f.Add(c.in, uint64(i), c.max)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte, seed uint64, max int64) {
		whole, err := decode(t, max, [][]byte{data})
		if err != nil {
			var ce *protocol.CloseError
			if !errors.As(err, &ce) || !isOneOf(err, closeSentinels) {
				t.Fatalf("error: got %#v, want a *CloseError sentinel", err)
			}
		}
		split, err2 := decode(t, max, splitRandom(data, seed))
		if err2 != err {
			t.Fatalf("error in pieces: got %v, want %v as whole", err2, err)
		}
		if !equalStrings(split, whole) {
			t.Fatalf("events in pieces:\ngot  %q\nwant %q", split, whole)
		}
	})
}

// FuzzParseRequest parses arbitrary heads: it must never panic, refusals are
// sentinels, and an accepted head has a valid ClientId inside it.
func FuzzParseRequest(f *testing.F) {
	for _, c := range requestCases {
		f.Add([]byte(c.req))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var r protocol.Request
		n, err := protocol.ParseRequest(p, &r)
		if err != nil {
			if !isOneOf(err, httpSentinels) {
				t.Fatalf("error: got %#v, want a sentinel", err)
			}
			if n < 0 || n > len(p) {
				t.Fatalf("n: got %d, want 0..%d", n, len(p))
			}
			return
		}
		if n < 4 || n > len(p) || n > protocol.MaxHeaderBytes || string(p[n-4:n]) != "\r\n\r\n" {
			t.Fatalf("n: got %d, want the end of a head within %d bytes", n, len(p))
		}
		if !protocol.ValidClientID(r.ClientID) {
			t.Fatalf("ClientID: got invalid %q, want valid", r.ClientID)
		}
		if len(r.Key) != 24 || len(r.Host) == 0 {
			t.Fatalf("Key %q Host %q: want a 24-byte key and a host", r.Key, r.Host)
		}
		if r.NForward < 0 || r.NForward > protocol.MaxForward {
			t.Fatalf("NForward: got %d, want 0..%d", r.NForward, protocol.MaxForward)
		}
	})
}

// FuzzParseProxy parses arbitrary bytes whole and byte by byte growing: it
// must never panic, errors are the sentinels, a header is bounded, a
// version 1 line ends with CRLF, and a prefix is either incomplete or gets
// the answer the whole input gets, since bytes after a header never change
// it.
func FuzzParseProxy(f *testing.F) {
	for _, c := range proxyCases {
		f.Add([]byte(c.in + afterProxy))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		var h protocol.ProxyHeader
		n, err := protocol.ParseProxy(p, &h)
		switch err {
		case nil:
			if n <= 0 || n > len(p) {
				t.Fatalf("n: got %d, want 1..%d", n, len(p))
			}
			switch h.Version {
			case 1:
				if n > protocol.MaxProxyV1Len || string(p[n-2:n]) != "\r\n" {
					t.Fatalf("v1 header of %d bytes %q: want at most %d ending in CRLF", n, p[:n], protocol.MaxProxyV1Len)
				}
			case 2:
				if n < 16 || n > protocol.MaxProxyV2Len {
					t.Fatalf("v2 header of %d bytes: want 16..%d", n, protocol.MaxProxyV2Len)
				}
			default:
				t.Fatalf("version: got %d, want 1 or 2", h.Version)
			}
			if h.Source.IsValid() != h.Dest.IsValid() || h.Source.Addr().Is4In6() || h.Source.Addr().Zone() != "" {
				t.Fatalf("addresses: got source %v dest %v, want both or neither, unmapped, no zone", h.Source, h.Dest)
			}
			if !protocol.HasProxySignature(p) {
				t.Fatalf("parsed a header without a signature: %q", p[:n])
			}
		case protocol.ErrNoProxy, protocol.ErrProxyIncomplete, protocol.ErrProxyHeader:
			if n != 0 {
				t.Fatalf("n: got %d with %v, want 0", n, err)
			}
		default:
			t.Fatalf("error: got %#v, want a sentinel", err)
		}
		for k := range min(len(p), 300) {
			var hk protocol.ProxyHeader
			nk, errk := protocol.ParseProxy(p[:k], &hk)
			if errk == protocol.ErrProxyIncomplete {
				continue
			}
			if errk != err || nk != n || hk != h {
				t.Fatalf("prefix of %d bytes: got %d %v %+v, want %d %v %+v as whole", k, nk, errk, hk, n, err, h)
			}
		}
	})
}

// TestWriteFuzzCorpus rewrites testdata/fuzz from the case tables when run
// with -update-corpus; f.Add seeds the same cases, but the files also serve
// `go test -fuzz` runs and other tools.
func TestWriteFuzzCorpus(t *testing.T) {
	if !*updateCorpus {
		t.Skip("run with -update-corpus to rewrite testdata/fuzz")
	}
	bad := regexp.MustCompile(`[^a-z0-9]+`)
	write := func(target, name string, values ...any) {
		t.Helper()
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, v := range values {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%s)\n", strconv.Quote(string(v)))
			default:
				fmt.Fprintf(&b, "%T(%v)\n", v, v)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		file := filepath.Join(dir, strings.Trim(bad.ReplaceAllString(strings.ToLower(name), "-"), "-"))
		if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range frameCases {
		if len(c.in) <= 4096 {
			write("FuzzDecoder", c.name, c.in, uint64(i), c.max)
		}
	}
	for _, c := range requestCases {
		if len(c.req) <= 4096 {
			write("FuzzParseRequest", c.name, []byte(c.req))
		}
	}
	for _, c := range proxyCases {
		write("FuzzParseProxy", c.name, []byte(c.in+afterProxy))
	}
}
