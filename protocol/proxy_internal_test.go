package protocol

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestProxyAddrMatchesNetip: the allocation-free address parsers accept
// exactly what netip.ParseAddr accepts for the family (no zones), with the
// same result, over known forms and random strings of address characters.
func TestProxyAddrMatchesNetip(t *testing.T) {
	inputs := []string{
		"", "::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9",
		"1:2:3:4:5:6:7", ":1:2:3:4:5:6:7", "1::2::3", ":::", "1:::2", "fFfF::", "12345::", "::ffff:1.2.3.4",
		"::1.2.3.4", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::01.2.3.4", "1.2.3.4", "0.0.0.0",
		"255.255.255.255", "256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "1..2.3", "1.2.3.4:", "::ffff:1.2.3.4:1",
		"1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "0001:0002::", "1.2.3.4::",
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "0123456789abcdefABCDEF:.:."
	for range 300000 {
		b := make([]byte, rng.IntN(46))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		want, err := netip.ParseAddr(in)
		for _, v6 := range []bool{false, true} {
			got, ok := proxyAddr([]byte(in), v6)
			wantOK := err == nil && want.Is6() == v6
			if ok != wantOK || ok && got != want {
				t.Fatalf("%q (v6 %v): got %v %v, want %v %v (%v)", in, v6, got, ok, want, wantOK, err)
			}
		}
	}
}
