package sign_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/sign"
)

// FuzzVerify feeds outside bytes to the Verifier's header parsing: it must
// never panic, and whatever it accepts must be the signed call itself.
func FuzzVerify(f *testing.F) {
	s := mustSigner(f, "k1=secret-one")
	v := mustVerifier(f, "k1=secret-one")
	m := message([]byte("hello"))
	valid := request(f, s, m)
	f.Add(valid.Header.Get(sign.HeaderSignatureInput), valid.Header.Get(sign.HeaderSignature),
		valid.Header.Get(sign.HeaderContentDigest), valid.Header.Get(sign.HeaderSeq))
	f.Add(`sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret", wsbridge=()`,
		`wsbridge=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:`, `sha-256=:AAAA:, sha-512=:BB==:`, "1")
	f.Add(`wsbridge=("@method" "x";a=1 "@query-param";name="q");created=1.5;keyid=tok;alg=?1`, `wsbridge=?0`, `sha-256=("a")`, "-1")
	f.Fuzz(func(t *testing.T, input, signature, digest, seq string) {
		r := valid.Clone(valid.Context())
		r.Header = http.Header{}
		for k, vs := range valid.Header {
			r.Header[k] = append([]string(nil), vs...)
		}
		r.Header.Set(sign.HeaderSignatureInput, input)
		r.Header.Set(sign.HeaderSignature, signature)
		r.Header.Set(sign.HeaderContentDigest, digest)
		r.Header.Set(sign.HeaderSeq, seq)
		got, err := v.VerifyAt(r, m.Body, time.Unix(created, 0))
		if err == nil && (got.Seq != m.Seq || got.ConnectionID != string(m.ConnectionID) || got.KeyID != "k1") {
			t.Fatalf("accepted a call that was not signed: %+v", got)
		}
	})
}
