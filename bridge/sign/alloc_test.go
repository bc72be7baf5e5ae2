//go:build !race

package sign_test

import "testing"

// TestAppendAllocs proves signing a call does not allocate once the
// Signer's pool is warm and the caller's buffer has room. The race
// detector allocates on its own (and empties sync.Pools), hence the tag.
func TestAppendAllocs(t *testing.T) {
	s := mustSigner(t, "k1=secret-one,k0=secret-zero")
	for _, bc := range bodyCases {
		m := message(bc.body)
		m.Query = []byte("token=letmein")
		buf := make([]byte, 0, 512)
		n := testing.AllocsPerRun(100, func() {
			m.Seq++
			buf, _ = s.Append(buf[:0], &m)
		})
		if n != 0 {
			t.Fatalf("Signer.Append with a %s body: allocs = %v, want 0", bc.name, n)
		}
	}
}
