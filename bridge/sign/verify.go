package sign

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Errors a Verifier returns, wrapped with the detail.
var (
	// ErrUnsigned: no Signature-Input or Signature member labelled wsbridge.
	ErrUnsigned = errors.New("sign: no wsbridge signature")
	// ErrMalformed: a signature header cannot be parsed, a covered header
	// is absent, or a parameter is missing or has the wrong type.
	ErrMalformed = errors.New("sign: malformed signature")
	// ErrNotCovered: the signature does not cover a required component.
	ErrNotCovered = errors.New("sign: required component not covered")
	// ErrUnknownKey: the keyid is not one of the Verifier's keys.
	ErrUnknownKey = errors.New("sign: unknown keyid")
	// ErrBadSignature: the HMAC does not match the request.
	ErrBadSignature = errors.New("sign: signature does not match")
	// ErrDigest: Content-Digest has no sha-256 or it does not match the body.
	ErrDigest = errors.New("sign: Content-Digest does not match the body")
	// ErrExpired: created is further than the maximum age from now, or
	// the expires parameter has passed.
	ErrExpired = errors.New("sign: signature too old or from the future")
)

// Verified is what a valid signature vouches for.
type Verified struct {
	KeyID        string    // the key that signed
	ConnectionID string    // Wsbridge-Connection-Id
	Seq          uint64    // Wsbridge-Seq
	Created      time.Time // the created parameter
}

// Verifier checks signed backend calls; it is what a Go backend (and the
// tests) use. It is safe for concurrent use.
type Verifier struct {
	keys   map[string][]byte
	maxAge time.Duration
}

// NewVerifier returns a Verifier that accepts a signature by any of keys,
// created at most maxAge before or after the time of verification.
// maxAge must cover the bridge's -backend-timeout plus the clocks'
// disagreement; a few minutes is typical.
func NewVerifier(keys []Key, maxAge time.Duration) (*Verifier, error) {
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	if maxAge <= 0 {
		return nil, fmt.Errorf("sign: verifier max age %v, want > 0", maxAge)
	}
	v := &Verifier{keys: make(map[string][]byte, len(keys)), maxAge: maxAge}
	for _, k := range keys {
		v.keys[k.ID] = append([]byte(nil), k.Secret...)
	}
	return v, nil
}

// ParseVerifier is NewVerifier(ParseKeys(value), maxAge): the backend is
// given the same -sign-key value as the bridge.
func ParseVerifier(value string, maxAge time.Duration) (*Verifier, error) {
	keys, err := ParseKeys(value)
	if err != nil {
		return nil, err
	}
	return NewVerifier(keys, maxAge)
}

// Verify checks r's wsbridge signature at time.Now(); body is r's whole
// body, already read. See VerifyAt.
func (v *Verifier) Verify(r *http.Request, body []byte) (Verified, error) {
	return v.VerifyAt(r, body, time.Now())
}

// VerifyAt checks, as of now, that r carries a signature labelled
// wsbridge covering every component the Signer covers (see the package
// doc), made with one of the Verifier's keys over r's method, path, query
// and headers as received, that Content-Digest is the body's SHA-256, and
// that the signature's created time is within the maximum age of now. A
// signature without alg is taken as hmac-sha256; any other alg is refused. It does not remember
// anything: telling a replay within the maximum age from an original is
// the caller's job, with Verified.Seq (see the package doc).
func (v *Verifier) VerifyAt(r *http.Request, body []byte, now time.Time) (Verified, error) {
	return v.verify(r, body, now, Label, components[:])
}

// verify checks the signature labelled label, which must cover required.
func (v *Verifier) verify(r *http.Request, body []byte, now time.Time, label string, required []string) (Verified, error) {
	var out Verified
	inputs, err := parseHeader(r.Header, HeaderSignatureInput)
	if err != nil {
		return out, err
	}
	sigs, err := parseHeader(r.Header, HeaderSignature)
	if err != nil {
		return out, err
	}
	in, ok := member(inputs, label)
	if !ok {
		return out, fmt.Errorf("%w: Signature-Input has no %q", ErrUnsigned, label)
	}
	sigMember, ok := member(sigs, label)
	if !ok {
		return out, fmt.Errorf("%w: Signature has no %q", ErrUnsigned, label)
	}
	if !in.inner {
		return out, fmt.Errorf("%w: Signature-Input %q is not an inner list", ErrMalformed, label)
	}
	if sigMember.inner || sigMember.item.kind != sfBytes {
		return out, fmt.Errorf("%w: Signature %q is not a byte sequence", ErrMalformed, label)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(sigMember.item.s)
	if err != nil {
		return out, fmt.Errorf("%w: Signature %q: %v", ErrMalformed, label, err)
	}

	// The covered components, and the parameters.
	names := make([]string, 0, len(in.list))
	for _, it := range in.list {
		if it.v.kind != sfString || len(it.params) > 0 {
			return out, fmt.Errorf("%w: a covered component must be a string without parameters", ErrMalformed)
		}
		for _, n := range names {
			if n == it.v.s {
				return out, fmt.Errorf("%w: component %q covered twice", ErrMalformed, n)
			}
		}
		names = append(names, it.v.s)
	}
	for _, want := range required {
		found := false
		for _, n := range names {
			found = found || n == want
		}
		if !found {
			return out, fmt.Errorf("%w: %q", ErrNotCovered, want)
		}
	}
	params := make([]param, 0, len(in.params))
	haveCreated := false
	var expires int64
	haveExpires := false
	for _, p := range in.params {
		switch p.v.kind {
		case sfInt:
			params = append(params, param{name: p.key, n: p.v.n, isInt: true})
		case sfString:
			if strings.ContainsAny(p.v.s, `"\`) {
				return out, fmt.Errorf("%w: parameter %s has a quote or backslash", ErrMalformed, p.key)
			}
			params = append(params, param{name: p.key, str: p.v.s})
		default:
			return out, fmt.Errorf("%w: parameter %s is neither an integer nor a string", ErrMalformed, p.key)
		}
		want := sfString
		switch p.key {
		case "created", "expires":
			want = sfInt
		case "keyid", "alg", "nonce", "tag":
		default:
			continue
		}
		if p.v.kind != want {
			return out, fmt.Errorf("%w: parameter %s has the wrong type", ErrMalformed, p.key)
		}
		switch p.key {
		case "created":
			out.Created, haveCreated = time.Unix(p.v.n, 0), true
		case "expires":
			expires, haveExpires = p.v.n, true
		case "keyid":
			out.KeyID = p.v.s
		case "alg":
			if p.v.s != Alg {
				return out, fmt.Errorf("%w: alg %q, want %q", ErrMalformed, p.v.s, Alg)
			}
		}
	}
	if !haveCreated {
		return out, fmt.Errorf("%w: no created parameter", ErrMalformed)
	}
	if out.KeyID == "" {
		return out, fmt.Errorf("%w: no keyid parameter", ErrMalformed)
	}
	key, ok := v.keys[out.KeyID]
	if !ok {
		return out, fmt.Errorf("%w %q", ErrUnknownKey, out.KeyID)
	}

	// The signature base, from the request as received.
	var base []byte
	for _, n := range names {
		val, err := componentValue(r, n)
		if err != nil {
			return out, err
		}
		base = appendLine(base, n, val)
	}
	base = appendName(base, "@signature-params")
	base = appendSigParams(base, names, params)
	mac := hmac.New(sha256.New, key)
	mac.Write(base)
	if !hmac.Equal(mac.Sum(nil), sig) {
		return out, fmt.Errorf("%w (keyid %q)", ErrBadSignature, out.KeyID)
	}

	// Signed: now the values it vouches for.
	if age := now.Sub(out.Created); age > v.maxAge || age < -v.maxAge {
		return out, fmt.Errorf("%w: created %d is %v from now, more than %v", ErrExpired, out.Created.Unix(), age, v.maxAge)
	}
	if haveExpires && now.Unix() > expires {
		return out, fmt.Errorf("%w: expired at %d", ErrExpired, expires)
	}
	for _, n := range names {
		switch n {
		case "content-digest":
			if err := checkDigest(r.Header, body); err != nil {
				return out, err
			}
		case "wsbridge-connection-id":
			out.ConnectionID, _ = componentValue(r, n)
		case "wsbridge-seq":
			s, _ := componentValue(r, n)
			seq, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return out, fmt.Errorf("%w: Wsbridge-Seq %q is not a number", ErrMalformed, s)
			}
			out.Seq = seq
		}
	}
	return out, nil
}

// parseHeader parses every line of the dictionary field name as one.
func parseHeader(h http.Header, name string) ([]sfMember, error) {
	d, err := parseDictionary(strings.Join(h.Values(name), ", "))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, name, err)
	}
	return d, nil
}

// componentValue returns a covered component's value in r (RFC 9421
// §2.1, §2.2): the derived components wsbridge uses and @authority, or a
// header field's lines, each trimmed, joined by ", ".
func componentValue(r *http.Request, name string) (string, error) {
	switch name {
	case "@method":
		return r.Method, nil
	case "@path":
		p, _ := target(r)
		if p == "" {
			return "/", nil
		}
		return p, nil
	case "@query":
		_, q := target(r)
		return "?" + q, nil
	case "@authority":
		return strings.ToLower(r.Host), nil
	}
	if strings.HasPrefix(name, "@") || name == "" || name != strings.ToLower(name) {
		return "", fmt.Errorf("%w: component %q is not supported", ErrMalformed, name)
	}
	lines := r.Header.Values(name)
	if len(lines) == 0 {
		return "", fmt.Errorf("%w: covered header %q is absent", ErrMalformed, name)
	}
	var b strings.Builder
	for i, l := range lines {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strings.Trim(l, " \t"))
	}
	if strings.ContainsAny(b.String(), "\r\n") {
		return "", fmt.Errorf("%w: header %q has a line break", ErrMalformed, name)
	}
	return b.String(), nil
}

// target returns r's path and raw query as received: from the request
// line when r came to a server in origin form, else from r.URL.
func target(r *http.Request) (path, query string) {
	if strings.HasPrefix(r.RequestURI, "/") {
		path, query, _ = strings.Cut(r.RequestURI, "?")
		return path, query
	}
	return r.URL.EscapedPath(), r.URL.RawQuery
}

// checkDigest checks the sha-256 member of Content-Digest against body.
func checkDigest(h http.Header, body []byte) error {
	d, err := parseHeader(h, HeaderContentDigest)
	if err != nil {
		return err
	}
	m, ok := member(d, "sha-256")
	if !ok || m.inner || m.item.kind != sfBytes {
		return fmt.Errorf("%w: no sha-256 byte sequence", ErrDigest)
	}
	got, err := base64.StdEncoding.Strict().DecodeString(m.item.s)
	if err != nil {
		return fmt.Errorf("%w: sha-256: %v", ErrDigest, err)
	}
	want := sha256.Sum256(body)
	if subtle.ConstantTimeCompare(got, want[:]) != 1 {
		return fmt.Errorf("%w: sha-256 differs", ErrDigest)
	}
	return nil
}
