package bridge

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// tlsBackend serves POST echo over TLS with a certificate for 127.0.0.1
// from a throwaway CA, and returns its address and that CA.
func tlsBackend(t *testing.T) (string, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "wsbridge test backend"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBody(ctx.PostBody()) }}
	go srv.ServeTLSEmbed(ln, certPEM, keyPEM) //nolint:errcheck
	t.Cleanup(func() { _ = srv.Shutdown() })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return ln.Addr().String(), pool
}

// An https backend works with and without pipelining, and its
// certificate is verified.
func TestTLSBackend(t *testing.T) {
	addr, ca := tlsBackend(t)
	for _, pipeline := range []int{1, 8} {
		t.Run("pipeline="+strconv.Itoa(pipeline), func(t *testing.T) {
			c, err := New(Config{Backend: "https://" + addr + "/api/", MaxConns: 2, Pipeline: pipeline,
				Timeout: 5 * time.Second, TLSConfig: &tls.Config{RootCAs: ca, MinVersion: tls.VersionTLS12}})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			d := make(done, 50)
			for i := range 50 {
				c.Submit(post(c, d, "tls"+strconv.Itoa(i), "secret "+strconv.Itoa(i)))
			}
			for _, call := range d.wait(t, 50) {
				id := string(call.Req.URI().LastPathSegment())
				if call.Outcome != OutcomeOK || string(call.Resp.Body()) != "secret "+id[3:] {
					t.Fatalf("%s: outcome %s (%v) body %q", id, call.Outcome, call.Err, call.Resp.Body())
				}
				ReleaseCall(call)
			}

			// Without the CA the certificate is refused: the call fails.
			strict, err := New(Config{Backend: "https://" + addr + "/api/", MaxConns: 1, Pipeline: pipeline, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer strict.Close()
			strict.Submit(post(strict, d, "untrusted", "x"))
			if call := d.wait(t, 1)[0]; call.Outcome != OutcomeUnreachable {
				t.Fatalf("untrusted certificate: outcome %s (%v), want unreachable", call.Outcome, call.Err)
			}
		})
	}
}
