package engine

import (
	"bytes"
	stdflate "compress/flate"
	"io"
	"testing"

	"github.com/klauspost/compress/flate"
)

// FuzzInflate feeds arbitrary bytes to the loop's inflater as a compressed
// message: it never panics, never returns more than the limit, fails only
// with errInflate or errInflateTooBig, and agrees with the standard
// library's inflater on the bytes. The same zstate serves every input, as a
// loop's does, so state left by one message would show in the next.
func FuzzInflate(f *testing.F) {
	var z zstate
	comp := func(p []byte, level int) []byte {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, level)
		w.Write(p)
		w.Flush()
		return bytes.TrimSuffix(b.Bytes(), []byte{0, 0, 0xff, 0xff})
	}
	f.Add([]byte{}, uint16(100))
	f.Add(comp([]byte("hello, hello, hello"), 1), uint16(100))
	f.Add(comp(bytes.Repeat([]byte(`{"a":1},`), 200), 9), uint16(1000))
	f.Add(comp(make([]byte, 5000), 9), uint16(4096))
	f.Add([]byte{0xff, 0xff, 0xff}, uint16(10))
	f.Fuzz(func(t *testing.T, p []byte, limit uint16) {
		out, err := z.inflate(p, int64(limit))
		if err != nil {
			if err != errInflate && err != errInflateTooBig {
				t.Fatalf("error %v", err)
			}
		} else if len(out) > int(limit) {
			t.Fatalf("%d bytes out, limit %d", len(out), limit)
		}
		// The reference: the standard library, read to one byte past the limit.
		r := stdflate.NewReader(io.MultiReader(bytes.NewReader(p), bytes.NewReader([]byte(deflateTail))))
		want, werr := io.ReadAll(io.LimitReader(r, int64(limit)+1))
		switch {
		case len(want) > int(limit):
			if err != errInflateTooBig {
				t.Fatalf("reference inflates past %d, got %v (%d bytes)", limit, err, len(out))
			}
		case werr != nil:
			// Corrupt: we fail too, as corrupt or, when the bytes before
			// the corruption pass the limit, as too big (the reference may
			// hold back output it decoded before the error).
			if err == nil {
				t.Fatalf("reference fails (%v), got %d bytes and no error", werr, len(out))
			}
		default:
			if err != nil || !bytes.Equal(out, want) {
				t.Fatalf("got %d bytes %v, want %d bytes", len(out), err, len(want))
			}
		}
	})
}
