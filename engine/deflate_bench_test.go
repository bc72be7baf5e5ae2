package engine

import (
	"bytes"
	"fmt"
	"testing"
)

func benchJSON(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":%d,"user":"u%d","text":"hello %d","score":%d.%02d},`, i*7919%100000, i*31%97, i*17%1000, i%100, i*13%100)
	}
	return b.Bytes()[:n]
}

// BenchmarkDeflate: the loop's compressor on one 1 KiB JSON message
// (reset each time: no context takeover).
func BenchmarkDeflate(b *testing.B) {
	for _, level := range []int{1, 6} {
		b.Run(fmt.Sprintf("level%d_1KiB", level), func(b *testing.B) {
			var z zstate
			p := benchJSON(1 << 10)
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n = len(z.deflate(p, level))
			}
			b.ReportMetric(float64(n), "bytes/msg")
		})
	}
}

// BenchmarkInflate: the loop's inflater on the same message compressed.
func BenchmarkInflate(b *testing.B) {
	var z zstate
	p := benchJSON(1 << 10)
	c := bytes.Clone(z.deflate(p, 1))
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := z.inflate(c, 1<<20); err != nil {
			b.Fatal(err)
		}
	}
}
