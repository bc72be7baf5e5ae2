package sign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The RFCs' own examples, run through this package's serialization.

// rfcSharedSecret is RFC 9421 Appendix B.1.5's test-shared-secret, base64.
const rfcSharedSecret = "uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ=="

// RFC 9421 Appendix B.2.5, "Signing a Request Using hmac-sha256": the
// signature base (line wrapping undone) and the resulting Signature.
const (
	rfcB25Base = `"date": Tue, 20 Apr 2021 02:07:55 GMT
"@authority": example.com
"content-type": application/json
"@signature-params": ("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`
	rfcB25Input     = `sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"`
	rfcB25Signature = `sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:`
	rfcB25Created   = 1618884473
)

func rfcKey(t testing.TB) []byte {
	t.Helper()
	k, err := base64.StdEncoding.DecodeString(rfcSharedSecret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRFC9421HMACVector builds B.2.5's signature base with the functions
// the Signer uses and signs it with B.1.5's secret: the base must be the
// RFC's byte for byte and the signature the RFC's.
func TestRFC9421HMACVector(t *testing.T) {
	names := []string{"date", "@authority", "content-type"}
	values := []string{"Tue, 20 Apr 2021 02:07:55 GMT", "example.com", "application/json"}
	var base []byte
	for i, n := range names {
		base = appendLine(base, n, values[i])
	}
	base = appendName(base, "@signature-params")
	base = appendSigParams(base, names, []param{
		{name: "created", n: rfcB25Created, isInt: true},
		{name: "keyid", str: "test-shared-secret"},
	})
	if string(base) != rfcB25Base {
		t.Fatalf("signature base:\ngot  %q\nwant %q", base, rfcB25Base)
	}
	mac := hmac.New(sha256.New, rfcKey(t))
	mac.Write(base)
	got := "sig-b25=:" + base64.StdEncoding.EncodeToString(mac.Sum(nil)) + ":"
	if got != rfcB25Signature {
		t.Fatalf("Signature: got %s, want %s", got, rfcB25Signature)
	}
}

// rfcTestRequest is RFC 9421 Appendix B.2's test-request with B.2.5's
// signature headers added.
func rfcTestRequest(t *testing.T) (*http.Request, []byte) {
	t.Helper()
	body := []byte(`{"hello": "world"}`)
	r, err := http.NewRequest("POST", "http://example.com/foo?param=Value&Pet=dog", nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Date", "Tue, 20 Apr 2021 02:07:55 GMT")
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Content-Digest", "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:")
	r.Header.Set("Content-Length", "18")
	r.Header.Set("Signature-Input", rfcB25Input)
	r.Header.Set("Signature", rfcB25Signature)
	return r, body
}

// TestRFC9421HMACVectorVerifies parses B.2.5's headers on the RFC's
// test-request and accepts them; changing a covered header is refused.
func TestRFC9421HMACVectorVerifies(t *testing.T) {
	v := &Verifier{keys: map[string][]byte{"test-shared-secret": rfcKey(t)}, maxAge: time.Minute}
	r, body := rfcTestRequest(t)
	got, err := v.verify(r, body, time.Unix(rfcB25Created+5, 0), "sig-b25", nil)
	if err != nil {
		t.Fatalf("verify B.2.5: got %v, want nil", err)
	}
	if got.KeyID != "test-shared-secret" || got.Created.Unix() != rfcB25Created {
		t.Fatalf("verified: got %+v, want keyid test-shared-secret, created %d", got, rfcB25Created)
	}

	r.Header.Set("Content-Type", "application/json; charset=utf-8")
	if _, err := v.verify(r, body, time.Unix(rfcB25Created, 0), "sig-b25", nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify B.2.5 with content-type changed: got %v, want %v", err, ErrBadSignature)
	}
	r, _ = rfcTestRequest(t)
	r.Host = "example.org"
	if _, err := v.verify(r, body, time.Unix(rfcB25Created, 0), "sig-b25", nil); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verify B.2.5 with @authority changed: got %v, want %v", err, ErrBadSignature)
	}
}

// TestRFC9530Digest checks Content-Digest against RFC 9530's examples
// (Appendix B: the representation {"hello": "world"} and a newline, 19
// bytes) and the SHA-256 of empty content.
func TestRFC9530Digest(t *testing.T) {
	for _, c := range []struct{ body, want string }{
		{"{\"hello\": \"world\"}\n", "sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:"},
		{"", "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"},
	} {
		if got := string(AppendDigest(nil, []byte(c.body))); got != c.want {
			t.Fatalf("AppendDigest(%q): got %s, want %s", c.body, got, c.want)
		}
		h := http.Header{}
		h.Set("Content-Digest", c.want)
		if err := checkDigest(h, []byte(c.body)); err != nil {
			t.Fatalf("checkDigest(%q): got %v, want nil", c.body, err)
		}
		if err := checkDigest(h, []byte(c.body+"x")); !errors.Is(err, ErrDigest) {
			t.Fatalf("checkDigest(%q): got %v, want %v", c.body+"x", err, ErrDigest)
		}
	}
	// A dictionary with several digests: the sha-256 member is the one checked.
	h := http.Header{}
	h.Set("Content-Digest", "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:, sha-256=:RK/0qy18MlBSVnWgjwz6lZEWjP/lF5HF9bvEF8FabDg=:")
	if err := checkDigest(h, []byte("{\"hello\": \"world\"}\n")); err != nil {
		t.Fatalf("checkDigest with sha-512 and sha-256: got %v, want nil", err)
	}
	h.Set("Content-Digest", "sha-512=:YMAam51Jz/jOATT6/zvHrLVgOYTGFy1d6GJiOHTohq4yP+pgk4vf2aCsyRZOtw8MjkM7iw7yZ/WkppmM44T3qg==:")
	if err := checkDigest(h, []byte("{\"hello\": \"world\"}\n")); !errors.Is(err, ErrDigest) || !strings.Contains(err.Error(), "no sha-256") {
		t.Fatalf("checkDigest with sha-512 only: got %v, want %v (no sha-256)", err, ErrDigest)
	}
}

// TestParseDictionary covers the structured-field forms the headers use
// and refuses what RFC 8941 refuses.
func TestParseDictionary(t *testing.T) {
	d, err := parseDictionary(`a=("x" "y\"z");created=-5;k="v", sig=:AAE=:;p, b, c=?0, t=tok/en:1, dec=1.25`)
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, len(d))
	for i, m := range d {
		keys[i] = m.key
	}
	if got := strings.Join(keys, ","); got != "a,sig,b,c,t,dec" {
		t.Fatalf("keys: got %s, want a,sig,b,c,t,dec", got)
	}
	a, _ := member(d, "a")
	if !a.inner || len(a.list) != 2 || a.list[1].v.s != `y"z` || len(a.params) != 2 ||
		a.params[0].v.n != -5 || a.params[1].v.s != "v" {
		t.Fatalf("member a: got %+v", a)
	}
	if m, _ := member(d, "sig"); m.item.kind != sfBytes || m.item.s != "AAE=" || len(m.params) != 1 {
		t.Fatalf("member sig: got %+v", m)
	}
	if m, _ := member(d, "b"); m.item.kind != sfBool || !m.item.b {
		t.Fatalf("member b: got %+v", m)
	}
	if m, _ := member(d, "t"); m.item.kind != sfToken || m.item.s != "tok/en:1" {
		t.Fatalf("member t: got %+v", m)
	}
	for _, bad := range []string{
		`a=(`, `a=("x"`, `a=("x""y")`, `A=1`, `a=1,`, `a=1;`, `a="x`, `a="\n"`, `a="\x"`, `a=:AA`,
		`a=1 b=2`, `a=1234567890123456`, `a=1.2345`, `a=?2`, `a=`, `,a=1`, "a=\"\x01\"",
	} {
		if _, err := parseDictionary(bad); err == nil {
			t.Errorf("parseDictionary(%q): got nil, want an error", bad)
		}
	}
	// A repeated key keeps the last value.
	d, err = parseDictionary(`a=1, b=2, a=3`)
	if err != nil || len(d) != 2 || d[0].item.n != 3 {
		t.Fatalf("repeated key: got %+v, %v; want a=3 first, b second", d, err)
	}
}
