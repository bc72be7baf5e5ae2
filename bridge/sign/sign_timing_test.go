package sign_test

import (
	"testing"
	"time"
)

// BenchmarkSignerAppend is the cost signing adds to one backend call:
// the body's SHA-256, the base's HMAC and the header values.
func BenchmarkSignerAppend(b *testing.B) {
	s := mustSigner(b, "k1=0123456789abcdef0123456789abcdef")
	for _, bc := range bodyCases {
		b.Run(bc.name, func(b *testing.B) {
			m := message(bc.body)
			buf := make([]byte, 0, 512)
			b.SetBytes(int64(len(bc.body)))
			b.ReportAllocs()
			for b.Loop() {
				m.Seq++
				buf, _ = s.Append(buf[:0], &m)
			}
		})
	}
}

// BenchmarkSignerAppendParallel is the same from every P at once, the way
// the bridge's workers would sign.
func BenchmarkSignerAppendParallel(b *testing.B) {
	s := mustSigner(b, "k1=0123456789abcdef0123456789abcdef")
	m0 := message(bodyCases[1].body)
	b.SetBytes(int64(len(m0.Body)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		m := m0
		buf := make([]byte, 0, 512)
		for pb.Next() {
			m.Seq++
			buf, _ = s.Append(buf[:0], &m)
		}
	})
}

// BenchmarkVerify is a Go backend's cost per call (1 KiB body); the
// Verifier is not on the bridge's path and allocates.
func BenchmarkVerify(b *testing.B) {
	s := mustSigner(b, "k1=0123456789abcdef0123456789abcdef")
	v := mustVerifier(b, "k1=0123456789abcdef0123456789abcdef")
	m := message(bodyCases[1].body)
	r := request(b, s, m)
	at := time.Unix(created, 0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.VerifyAt(r, m.Body, at); err != nil {
			b.Fatal(err)
		}
	}
}
