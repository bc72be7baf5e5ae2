package sign_test

import (
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/protocol"
)

// The bridge signs each backend call: the four values go into the request
// as headers, beside Wsbridge-Connection-Id.
func ExampleSigner_Append() {
	s, err := sign.ParseSigner("k1=a shared secret")
	if err != nil {
		panic(err)
	}
	var buf []byte // reused from call to call
	buf, sig := s.Append(buf[:0], &sign.Message{
		Method:       "POST",
		Path:         []byte("/api/alice"),
		Body:         []byte(`{"text":"hi"}`),
		ConnectionID: []byte("5be1c0a2f3d4-1a"),
		Seq:          2,
		Created:      1700000000,
	})
	fmt.Printf("%s: %s\n", sign.HeaderSeq, sig.Seq)
	fmt.Printf("%s: %s\n", sign.HeaderContentDigest, sig.ContentDigest)
	fmt.Printf("%s: %s\n", sign.HeaderSignatureInput, sig.SignatureInput)
	fmt.Printf("%s: %s\n", sign.HeaderSignature, sig.Signature)
	// Output:
	// Wsbridge-Seq: 2
	// Content-Digest: sha-256=:57mV76dVxf87hNIYi1jLSukWpZRw6zdh34qBTxF2NQA=:
	// Signature-Input: wsbridge=("@method" "@path" "@query" "content-digest" "wsbridge-connection-id" "wsbridge-seq");created=1700000000;keyid="k1";alg="hmac-sha256"
	// Signature: wsbridge=:pVj9E7vh4E+1d8rNAWuMS5cS2CB0AoKMajKQq4skti0=:
}

// A Go backend checks every call before acting on it, and keeps the
// highest seq per connection to refuse a replayed one.
func ExampleVerifier_Verify() {
	v, err := sign.ParseVerifier("k1=a shared secret", 5*time.Minute) // the bridge's -sign-key value
	if err != nil {
		panic(err)
	}
	http.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		call, err := v.Verify(r, body)
		if err != nil {
			http.Error(w, "unsigned", http.StatusUnauthorized)
			return
		}
		_ = call.ConnectionID == r.Header.Get(protocol.HeaderConnectionID) // always true: it is signed
		// … call.Seq must be above the last one handled for call.ConnectionID …
		_, _ = io.WriteString(w, "ok")
	})
}
