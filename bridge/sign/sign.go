package sign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"hash"
	"strconv"
	"sync"
)

// Header names a signed call carries besides Wsbridge-Connection-Id
// (protocol.HeaderConnectionID), in canonical form.
const (
	// HeaderSeq is the call's per-connection sequence number, in decimal.
	HeaderSeq = "Wsbridge-Seq"
	// HeaderContentDigest is RFC 9530's digest of the body.
	HeaderContentDigest = "Content-Digest"
	// HeaderSignatureInput names the covered components and parameters.
	HeaderSignatureInput = "Signature-Input"
	// HeaderSignature is the HMAC itself.
	HeaderSignature = "Signature"
)

const (
	// Label is the signature's label in Signature-Input and Signature.
	Label = "wsbridge"
	// Alg is the only algorithm: RFC 9421 §3.3.3 HMAC using SHA-256.
	Alg = "hmac-sha256"
)

// components are the covered components of every wsbridge signature, in
// signature-base order. A Verifier requires all of them.
var components = [...]string{
	"@method", "@path", "@query", "content-digest", "wsbridge-connection-id", "wsbridge-seq",
}

// Message is what a backend call's signature covers. Every slice is only
// read during Append, which keeps no reference to it.
type Message struct {
	// Method is "GET", "POST" or "DELETE".
	Method string
	// Path is the request target's path exactly as sent, e.g.
	// "/api/alice" for the backend http://host/api/ and ClientId alice.
	// Empty is signed as "/" (RFC 9421 §2.2.6).
	Path []byte
	// Query is the raw query as sent, without the '?'. Nil or empty is
	// signed as "?" alone (RFC 9421 §2.2.7).
	Query []byte
	// Body is the request body (empty for a GET).
	Body []byte
	// ConnectionID is the Wsbridge-Connection-Id header's value.
	ConnectionID []byte
	// Seq is the call's sequence number on its connection, sent as
	// Wsbridge-Seq.
	Seq uint64
	// Created is the signing time in Unix seconds.
	Created int64
}

// Signed holds the values of the four headers a signed call must carry
// besides Wsbridge-Connection-Id. They are slices of the buffer Append
// returned and stay valid while that buffer is neither reused nor appended
// to by someone else.
type Signed struct {
	Seq            []byte // Wsbridge-Seq: "7"
	ContentDigest  []byte // Content-Digest: "sha-256=:…:"
	SignatureInput []byte // Signature-Input: `wsbridge=("@method" …);created=…;keyid="…";alg="hmac-sha256"`
	Signature      []byte // Signature: "wsbridge=:…:"
}

// Signer signs backend calls with the first of its keys. It is safe for
// concurrent use; Append does not allocate once its pool is warm and dst
// has room (about 250 bytes plus the keyid).
type Signer struct {
	keyID  string
	secret []byte
	// prefix and suffix surround created in the signature parameters:
	// `("@method" … "wsbridge-seq");created=` and `;keyid="k";alg="hmac-sha256"`.
	prefix, suffix []byte
	pool           sync.Pool // *state
}

// state is one signing goroutine's scratch: a keyed HMAC, reset between
// uses, and the signature base.
type state struct {
	mac  hash.Hash
	base []byte
	sum  [sha256.Size]byte
}

// maxPooledBase is the largest signature base buffer put back in the pool;
// a call with a longer query gets a fresh one, so one huge query does not
// pin memory.
const maxPooledBase = 4096

// NewSigner returns a Signer that signs with keys[0]. The other keys only
// matter to a Verifier; they are checked here so that one flag value is
// valid for both.
func NewSigner(keys []Key) (*Signer, error) {
	if err := checkKeys(keys); err != nil {
		return nil, err
	}
	k := keys[0]
	s := &Signer{keyID: k.ID, secret: append([]byte(nil), k.Secret...)}
	s.prefix = append(appendSigParams(nil, components[:], nil), ";created="...)
	s.suffix = appendParamList(nil, []param{{name: "keyid", str: k.ID}, {name: "alg", str: Alg}})
	s.pool.New = func() any {
		return &state{mac: hmac.New(sha256.New, s.secret), base: make([]byte, 0, 512)}
	}
	return s, nil
}

// ParseSigner is NewSigner(ParseKeys(value)).
func ParseSigner(value string) (*Signer, error) {
	keys, err := ParseKeys(value)
	if err != nil {
		return nil, err
	}
	return NewSigner(keys)
}

// KeyID returns the id of the signing key.
func (s *Signer) KeyID() string { return s.keyID }

// Append signs m: it appends the values of Wsbridge-Seq, Content-Digest,
// Signature-Input and Signature to dst and returns the extended buffer and
// the four values as slices of it. The caller sets each header from its
// value, as it is, on the request whose method, path, query, body and
// Wsbridge-Connection-Id are those of m.
func (s *Signer) Append(dst []byte, m *Message) ([]byte, Signed) {
	start := len(dst)
	dst = strconv.AppendUint(dst, m.Seq, 10)
	seqEnd := len(dst)
	dst = appendDigest(dst, m.Body)
	digestEnd := len(dst)
	dst = append(dst, Label...)
	dst = append(dst, '=')
	paramsStart := len(dst)
	dst = append(dst, s.prefix...)
	dst = strconv.AppendInt(dst, m.Created, 10)
	dst = append(dst, s.suffix...)
	inputEnd := len(dst)

	st := s.pool.Get().(*state)
	b := st.base[:0]
	b = appendLine(b, "@method", m.Method)
	b = appendName(b, "@path")
	if len(m.Path) == 0 {
		b = append(b, '/')
	} else {
		b = append(b, m.Path...)
	}
	b = append(b, '\n')
	b = appendName(b, "@query")
	b = append(b, '?')
	b = append(b, m.Query...)
	b = append(b, '\n')
	b = appendLine(b, "content-digest", dst[seqEnd:digestEnd])
	b = appendLine(b, "wsbridge-connection-id", m.ConnectionID)
	b = appendLine(b, "wsbridge-seq", dst[start:seqEnd])
	b = appendName(b, "@signature-params")
	b = append(b, dst[paramsStart:inputEnd]...)
	st.mac.Reset()
	st.mac.Write(b)
	mac := st.mac.Sum(st.sum[:0])

	dst = append(dst, Label...)
	dst = append(dst, "=:"...)
	dst = base64.StdEncoding.AppendEncode(dst, mac)
	dst = append(dst, ':')
	if cap(b) <= maxPooledBase {
		st.base = b
	} else {
		st.base = make([]byte, 0, 512)
	}
	s.pool.Put(st)
	return dst, Signed{
		Seq:            dst[start:seqEnd:seqEnd],
		ContentDigest:  dst[seqEnd:digestEnd:digestEnd],
		SignatureInput: dst[digestEnd:inputEnd:inputEnd],
		Signature:      dst[inputEnd:len(dst):len(dst)],
	}
}

// AppendDigest appends the RFC 9530 Content-Digest value of body,
// "sha-256=:<base64 of SHA-256(body)>:", to dst.
func AppendDigest(dst, body []byte) []byte { return appendDigest(dst, body) }

func appendDigest(dst, body []byte) []byte {
	sum := sha256.Sum256(body)
	dst = append(dst, "sha-256=:"...)
	dst = base64.StdEncoding.AppendEncode(dst, sum[:])
	return append(dst, ':')
}

// The signature base (RFC 9421 §2.5): one line `"<component>": <value>`
// per covered component, each ended by a newline, then the line
// `"@signature-params": <signature parameters>` with no newline after it.

// appendName appends the start of a signature base line: `"name": `.
func appendName(b []byte, name string) []byte {
	b = append(b, '"')
	b = append(b, name...)
	return append(b, '"', ':', ' ')
}

// appendLine appends a whole signature base line for a component.
func appendLine[V ~string | ~[]byte](b []byte, name string, value V) []byte {
	b = appendName(b, name)
	b = append(b, value...)
	return append(b, '\n')
}

// param is one signature parameter: an integer when isInt, else a string.
type param struct {
	name  string
	str   string
	n     int64
	isInt bool
}

// appendSigParams appends the signature parameters (RFC 9421 §2.3): the
// covered components as an inner list of strings (RFC 8941 §4.1.1.1), then
// each parameter as `;name=value`.
func appendSigParams(b []byte, names []string, params []param) []byte {
	b = append(b, '(')
	for i, n := range names {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, '"')
		b = append(b, n...)
		b = append(b, '"')
	}
	b = append(b, ')')
	return appendParamList(b, params)
}

// appendParamList appends each parameter as `;name=value`. Strings are
// written without escaping: a keyid holds no '"' or '\\' (checkKeyID) and
// the Verifier refuses a string it would have to escape.
func appendParamList(b []byte, params []param) []byte {
	for _, p := range params {
		b = append(b, ';')
		b = append(b, p.name...)
		b = append(b, '=')
		if p.isInt {
			b = strconv.AppendInt(b, p.n, 10)
		} else {
			b = append(b, '"')
			b = append(b, p.str...)
			b = append(b, '"')
		}
	}
	return b
}
