package sign_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/protocol"
)

// bodyCases are the bodies the round-trip test and the benchmark use.
var bodyCases = []struct {
	name string
	body []byte
}{
	{"0 B", nil},
	{"1 KiB", []byte(strings.Repeat("wsbridge", 128))},
	{"64 KiB", []byte(strings.Repeat("0123456789abcdef", 4096))},
}

const created = 1700000000

// message is a POST as the bridge would sign it.
func message(body []byte) sign.Message {
	return sign.Message{
		Method:       "POST",
		Path:         []byte("/api/alice"),
		Body:         body,
		ConnectionID: []byte("5be1c0a2f3d4-1a"),
		Seq:          3,
		Created:      created,
	}
}

func requireEqual[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}

func mustSigner(t testing.TB, flag string) *sign.Signer {
	t.Helper()
	s, err := sign.ParseSigner(flag)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustVerifier(t testing.TB, flag string) *sign.Verifier {
	t.Helper()
	v, err := sign.ParseVerifier(flag, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// request signs m with s and returns it as the backend would receive it
// from a bridge whose backend URL is http://backend/api/.
func request(t testing.TB, s *sign.Signer, m sign.Message) *http.Request {
	t.Helper()
	u := "http://backend" + string(m.Path)
	if m.Query != nil {
		u += "?" + string(m.Query)
	}
	r, err := http.NewRequest(m.Method, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, sig := s.Append(nil, &m)
	r.Header.Set(protocol.HeaderConnectionID, string(m.ConnectionID))
	r.Header.Set(sign.HeaderSeq, string(sig.Seq))
	r.Header.Set(sign.HeaderContentDigest, string(sig.ContentDigest))
	r.Header.Set(sign.HeaderSignatureInput, string(sig.SignatureInput))
	r.Header.Set(sign.HeaderSignature, string(sig.Signature))
	return r
}

// TestSignerHeaders checks the four values against the contract's format
// and the signature against an HMAC of the signature base written out by
// hand (RFC 9421 §2.5), for each method's shape of call.
func TestSignerHeaders(t *testing.T) {
	secret := "c2VjcmV0LWJ5dGVz=="
	s := mustSigner(t, "k1="+secret+",k0=old")
	requireEqual(t, "KeyID", s.KeyID(), "k1")
	for _, c := range []struct {
		name       string
		m          sign.Message
		path, qry  string
		wantDigest string
	}{
		{"GET with a query", sign.Message{Method: "GET", Path: []byte("/api/alice"), Query: []byte("token=a%20b&x=1"),
			ConnectionID: []byte("5be1c0a2f3d4-1"), Seq: 1, Created: created},
			"/api/alice", "?token=a%20b&x=1", "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"},
		{"GET with an empty query", sign.Message{Method: "GET", Path: []byte("/alice"), Query: []byte{},
			ConnectionID: []byte("5be1c0a2f3d4-1"), Seq: 1, Created: created},
			"/alice", "?", "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"},
		{"POST", message([]byte("{\"hello\": \"world\"}\n")),
			"/api/alice", "?", "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"},
		{"DELETE, empty path", sign.Message{Method: "DELETE", Body: []byte("bye"),
			ConnectionID: []byte("5be1c0a2f3d4-1a"), Seq: 18446744073709551615, Created: created},
			"/", "?", "sha-256=:" + b64(sha256.Sum256([]byte("bye"))) + ":"},
	} {
		t.Run(c.name, func(t *testing.T) {
			buf := []byte("left alone")
			out, sig := s.Append(buf, &c.m)
			requireEqual(t, "buffer prefix", string(out[:len(buf)]), "left alone")
			requireEqual(t, "Wsbridge-Seq", string(sig.Seq), strconv.FormatUint(c.m.Seq, 10))
			requireEqual(t, "Content-Digest", string(sig.ContentDigest), c.wantDigest)
			params := `("@method" "@path" "@query" "content-digest" "wsbridge-connection-id" "wsbridge-seq");created=1700000000;keyid="k1";alg="hmac-sha256"`
			requireEqual(t, "Signature-Input", string(sig.SignatureInput), "wsbridge="+params)
			base := `"@method": ` + c.m.Method + "\n" +
				`"@path": ` + c.path + "\n" +
				`"@query": ` + c.qry + "\n" +
				`"content-digest": ` + c.wantDigest + "\n" +
				`"wsbridge-connection-id": ` + string(c.m.ConnectionID) + "\n" +
				`"wsbridge-seq": ` + strconv.FormatUint(c.m.Seq, 10) + "\n" +
				`"@signature-params": ` + params
			mac := hmac.New(sha256.New, []byte(secret))
			mac.Write([]byte(base))
			requireEqual(t, "Signature", string(sig.Signature), "wsbridge=:"+base64.StdEncoding.EncodeToString(mac.Sum(nil))+":")
		})
	}
}

func b64(sum [32]byte) string { return base64.StdEncoding.EncodeToString(sum[:]) }

// TestRoundTrip signs with the Signer and verifies with a Verifier built
// from the same flag value, for each body size and method.
func TestRoundTrip(t *testing.T) {
	s := mustSigner(t, "k1=secret-one")
	v := mustVerifier(t, "k1=secret-one")
	for _, bc := range bodyCases {
		for _, method := range []string{"GET", "POST", "DELETE"} {
			m := message(bc.body)
			m.Method = method
			if method == "GET" {
				m.Query = []byte("token=letmein")
			}
			r := request(t, s, m)
			got, err := v.VerifyAt(r, bc.body, time.Unix(created+30, 0))
			if err != nil {
				t.Fatalf("%s %s: Verify: got %v, want nil", method, bc.name, err)
			}
			want := sign.Verified{KeyID: "k1", ConnectionID: "5be1c0a2f3d4-1a", Seq: 3, Created: time.Unix(created, 0)}
			if got != want {
				t.Fatalf("%s %s: Verified: got %+v, want %+v", method, bc.name, got, want)
			}
		}
	}
}

// TestTamper changes one thing at a time in a signed call; each must be
// refused, with the error that names why.
func TestTamper(t *testing.T) {
	s := mustSigner(t, "k1=secret-one")
	v := mustVerifier(t, "k1=secret-one,k2=secret-two")
	body := []byte(`{"text":"hi"}`)
	now := time.Unix(created+1, 0)
	m := message(body)
	m.Query = []byte("a=1")
	for _, c := range []struct {
		name   string
		change func(r *http.Request) []byte // returns the body the backend reads
		want   error
	}{
		{"nothing", func(r *http.Request) []byte { return body }, nil},
		{"@method", func(r *http.Request) []byte { r.Method = "DELETE"; return body }, sign.ErrBadSignature},
		{"@path", func(r *http.Request) []byte { r.URL.Path = "/api/bob"; return body }, sign.ErrBadSignature},
		{"@query changed", func(r *http.Request) []byte { r.URL.RawQuery = "a=2"; return body }, sign.ErrBadSignature},
		{"@query dropped", func(r *http.Request) []byte { r.URL.RawQuery = ""; return body }, sign.ErrBadSignature},
		{"body", func(r *http.Request) []byte { return []byte(`{"text":"ho"}`) }, sign.ErrDigest},
		{"body and content-digest", func(r *http.Request) []byte {
			b := []byte(`{"text":"ho"}`)
			r.Header.Set(sign.HeaderContentDigest, string(sign.AppendDigest(nil, b)))
			return b
		}, sign.ErrBadSignature},
		{"wsbridge-connection-id", func(r *http.Request) []byte {
			r.Header.Set(protocol.HeaderConnectionID, "5be1c0a2f3d4-1b")
			return body
		}, sign.ErrBadSignature},
		{"wsbridge-seq", func(r *http.Request) []byte { r.Header.Set(sign.HeaderSeq, "4"); return body }, sign.ErrBadSignature},
		{"created", func(r *http.Request) []byte {
			replaceIn(r, sign.HeaderSignatureInput, "created=1700000000", "created=1700000001")
			return body
		}, sign.ErrBadSignature},
		{"keyid to another known key", func(r *http.Request) []byte {
			replaceIn(r, sign.HeaderSignatureInput, `keyid="k1"`, `keyid="k2"`)
			return body
		}, sign.ErrBadSignature},
		{"signature", func(r *http.Request) []byte {
			sig := r.Header.Get(sign.HeaderSignature)
			i := len("wsbridge=:") + 3
			flip := byte('A')
			if sig[i] == 'A' {
				flip = 'B'
			}
			r.Header.Set(sign.HeaderSignature, sig[:i]+string(flip)+sig[i+1:])
			return body
		}, sign.ErrBadSignature},
		{"unknown keyid", func(r *http.Request) []byte {
			replaceIn(r, sign.HeaderSignatureInput, `keyid="k1"`, `keyid="k9"`)
			return body
		}, sign.ErrUnknownKey},
		{"component dropped", func(r *http.Request) []byte {
			replaceIn(r, sign.HeaderSignatureInput, ` "wsbridge-seq"`, "")
			return body
		}, sign.ErrNotCovered},
		{"alg", func(r *http.Request) []byte {
			replaceIn(r, sign.HeaderSignatureInput, `hmac-sha256`, `hmac-sha512`)
			return body
		}, sign.ErrMalformed},
		{"no Signature", func(r *http.Request) []byte { r.Header.Del(sign.HeaderSignature); return body }, sign.ErrUnsigned},
		{"no Signature-Input", func(r *http.Request) []byte { r.Header.Del(sign.HeaderSignatureInput); return body }, sign.ErrUnsigned},
		{"other label", func(r *http.Request) []byte {
			replaceIn(r, sign.HeaderSignatureInput, "wsbridge=", "sig1=")
			return body
		}, sign.ErrUnsigned},
		{"no Wsbridge-Seq", func(r *http.Request) []byte { r.Header.Del(sign.HeaderSeq); return body }, sign.ErrMalformed},
		{"garbled Signature-Input", func(r *http.Request) []byte {
			r.Header.Set(sign.HeaderSignatureInput, `wsbridge=("@method"`)
			return body
		}, sign.ErrMalformed},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := request(t, s, m)
			b := c.change(r)
			_, err := v.VerifyAt(r, b, now)
			if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("Verify after changing %s: got %v, want %v", c.name, err, c.want)
			}
		})
	}
}

func replaceIn(r *http.Request, header, old, new string) {
	v := r.Header.Get(header)
	if !strings.Contains(v, old) {
		panic(fmt.Sprintf("%s %q has no %q", header, v, old))
	}
	r.Header.Set(header, strings.Replace(v, old, new, 1))
}

// TestMaxAge refuses a signature older, or further in the future, than the
// Verifier's maximum age, and accepts one at the limit.
func TestMaxAge(t *testing.T) {
	s := mustSigner(t, "k1=secret-one")
	v := mustVerifier(t, "k1=secret-one") // max age 1 minute
	r := request(t, s, message(nil))
	for _, c := range []struct {
		at   int64
		want error
	}{
		{created, nil},
		{created + 60, nil},
		{created - 60, nil},
		{created + 61, sign.ErrExpired},
		{created - 61, sign.ErrExpired},
	} {
		if _, err := v.VerifyAt(r, nil, time.Unix(c.at, 0)); !errors.Is(err, c.want) || c.want == nil && err != nil {
			t.Fatalf("Verify %+d s after created: got %v, want %v", c.at-created, err, c.want)
		}
	}
}

// TestKeyRotation: the bridge moves to a new key while backends know both.
func TestKeyRotation(t *testing.T) {
	oldSigner := mustSigner(t, "2025=old-secret")
	newSigner := mustSigner(t, "2026=new-secret,2025=old-secret")
	both := mustVerifier(t, "2025=old-secret,2026=new-secret")
	onlyOld := mustVerifier(t, "2025=old-secret")
	at := time.Unix(created, 0)

	got, err := both.VerifyAt(request(t, newSigner, message(nil)), nil, at)
	if err != nil || got.KeyID != "2026" {
		t.Fatalf("new key, verifier knowing both: got %+v, %v; want keyid 2026, nil", got, err)
	}
	got, err = both.VerifyAt(request(t, oldSigner, message(nil)), nil, at)
	if err != nil || got.KeyID != "2025" {
		t.Fatalf("old key, verifier knowing both: got %+v, %v; want keyid 2025, nil", got, err)
	}
	if _, err := onlyOld.VerifyAt(request(t, newSigner, message(nil)), nil, at); !errors.Is(err, sign.ErrUnknownKey) {
		t.Fatalf("new key, verifier knowing the old one only: got %v, want %v", err, sign.ErrUnknownKey)
	}
	// Same keyid, another secret: refused.
	wrong := mustVerifier(t, "2026=guessed")
	if _, err := wrong.VerifyAt(request(t, newSigner, message(nil)), nil, at); !errors.Is(err, sign.ErrBadSignature) {
		t.Fatalf("wrong secret: got %v, want %v", err, sign.ErrBadSignature)
	}
}

// TestParseKeys checks the flag syntax and that its errors say what is
// wrong without ever quoting a secret.
func TestParseKeys(t *testing.T) {
	keys, err := sign.ParseKeys("k1=a b=c==,k-2=x")
	if err != nil {
		t.Fatal(err)
	}
	requireEqual(t, "keys", fmt.Sprintf("%s=%s %s=%s", keys[0].ID, keys[0].Secret, keys[1].ID, keys[1].Secret), "k1=a b=c== k-2=x")

	for _, c := range []struct{ value, want string }{
		{"", "empty, want <keyid>=<secret>"},
		{"topsecret", "entry 1 has no '='"},
		{"k1=topsecret,topsecret2", "entry 2 has no '='"},
		{"=topsecret", "entry 1: empty keyid"},
		{"k1=", `entry 1 (keyid "k1"): empty secret`},
		{"k1=topsecret,k1=topsecret2", `entry 2: keyid "k1" given twice`},
		{"k1=topsecret,", "entry 2 is empty"},
		{",k1=topsecret", "entry 1 is empty"},
		{`k"1=topsecret`, `byte 1 ('"') is not allowed`},
		{"k 1=topsecret", `byte 1 (' ') is not allowed`},
		{"k\\1=topsecret", `byte 1 ('\\') is not allowed`},
		{strings.Repeat("k", 65) + "=topsecret", "longer than 64 bytes"},
	} {
		_, err := sign.ParseKeys(c.value)
		if !errors.Is(err, sign.ErrBadKey) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseKeys(%q): got %v, want %v containing %q", c.value, err, sign.ErrBadKey, c.want)
			continue
		}
		if strings.Contains(err.Error(), "topsecret") {
			t.Errorf("ParseKeys(%q): error %q quotes a secret", c.value, err)
		}
		if _, err := sign.ParseSigner(c.value); !errors.Is(err, sign.ErrBadKey) {
			t.Errorf("ParseSigner(%q): got %v, want %v", c.value, err, sign.ErrBadKey)
		}
		if _, err := sign.ParseVerifier(c.value, time.Minute); !errors.Is(err, sign.ErrBadKey) {
			t.Errorf("ParseVerifier(%q): got %v, want %v", c.value, err, sign.ErrBadKey)
		}
	}
	if _, err := sign.NewSigner([]sign.Key{{ID: "a", Secret: []byte("x")}, {ID: "a", Secret: []byte("y")}}); !errors.Is(err, sign.ErrBadKey) {
		t.Errorf("NewSigner with a repeated keyid: got %v, want %v", err, sign.ErrBadKey)
	}
	if _, err := sign.NewVerifier(nil, time.Minute); !errors.Is(err, sign.ErrBadKey) {
		t.Errorf("NewVerifier without keys: got %v, want %v", err, sign.ErrBadKey)
	}
	if _, err := sign.ParseVerifier("a=x", 0); err == nil {
		t.Error("ParseVerifier with max age 0: got nil, want an error")
	}
}

// TestSignerConcurrent signs from many goroutines at once (run with
// -race): every signature verifies.
func TestSignerConcurrent(t *testing.T) {
	s := mustSigner(t, "k1=secret-one")
	v := mustVerifier(t, "k1=secret-one")
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			var buf []byte
			for i := range 200 {
				m := message([]byte(fmt.Sprintf("g%d m%d", g, i)))
				m.Seq = uint64(i)
				var sig sign.Signed
				buf, sig = s.Append(buf[:0], &m)
				r, _ := http.NewRequest("POST", "http://backend/api/alice", nil)
				r.Header.Set(protocol.HeaderConnectionID, string(m.ConnectionID))
				r.Header.Set(sign.HeaderSeq, string(sig.Seq))
				r.Header.Set(sign.HeaderContentDigest, string(sig.ContentDigest))
				r.Header.Set(sign.HeaderSignatureInput, string(sig.SignatureInput))
				r.Header.Set(sign.HeaderSignature, string(sig.Signature))
				if _, err := v.VerifyAt(r, m.Body, time.Unix(created, 0)); err != nil {
					errs <- fmt.Errorf("goroutine %d call %d: %w", g, i, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestVerifyOverHTTP verifies in a real net/http server, where path and
// query come from the request line as received: percent-encoding is kept
// as the bridge sent it.
func TestVerifyOverHTTP(t *testing.T) {
	s := mustSigner(t, "k1=secret-one")
	v := mustVerifier(t, "k1=secret-one")
	type result struct {
		got sign.Verified
		err error
	}
	results := make(chan result, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got, err := v.Verify(r, body)
		results <- result{got, err}
	}))
	defer srv.Close()
	for _, m := range []sign.Message{
		{Method: "GET", Path: []byte("/api%7e1/alice"), Query: []byte("token=a%20b&next=%2Fx"), ConnectionID: []byte("c-1"), Seq: 1},
		{Method: "POST", Path: []byte("/api%7e1/alice"), Body: []byte("hello"), ConnectionID: []byte("c-1"), Seq: 2},
		{Method: "DELETE", Path: []byte("/alice"), Body: []byte("bye"), ConnectionID: []byte("c-1"), Seq: 3},
	} {
		m.Created = time.Now().Unix()
		r := request(t, s, m)
		u, err := url.Parse(srv.URL + r.URL.RequestURI())
		if err != nil {
			t.Fatal(err)
		}
		r.URL, r.Host = u, u.Host
		r.Body = io.NopCloser(bytes.NewReader(m.Body))
		r.ContentLength = int64(len(m.Body))
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		res := <-results
		if res.err != nil || res.got.Seq != m.Seq {
			t.Fatalf("%s %s?%s: got %+v, %v; want seq %d, nil", m.Method, m.Path, m.Query, res.got, res.err, m.Seq)
		}
	}
}
