package protocol_test

import (
	"testing"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

// BenchmarkDecode decodes the bench cases of frameCases. Next unmasks in
// place, so every iteration first copies the masked input back; that copy is
// part of the measured time.
func BenchmarkDecode(b *testing.B) {
	for _, c := range frameCases {
		if !c.bench {
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			buf := make([]byte, len(c.in))
			d := protocol.Decoder{MaxMessage: c.max}
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				copy(buf, c.in)
				for p := buf; ; {
					ev, n, err := d.Next(p)
					if err != nil {
						b.Fatal(err)
					}
					if ev.Kind == protocol.EventNone {
						break
					}
					p = p[n:]
				}
			}
		})
	}
}

func BenchmarkEncode(b *testing.B) {
	for _, c := range encodeCases {
		if !c.bench {
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			payload := make([]byte, c.size)
			dst := make([]byte, 0, c.size+ws.MaxHeaderSize)
			b.SetBytes(int64(c.size))
			b.ReportAllocs()
			for b.Loop() {
				dst = protocol.AppendFrame(dst[:0], ws.OpText, payload)
			}
		})
	}
}

func BenchmarkParseRequest(b *testing.B) {
	for _, c := range requestCases {
		if !c.bench {
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			in := []byte(c.req)
			var r protocol.Request
			b.SetBytes(int64(len(in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := protocol.ParseRequest(in, &r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAcceptKey(b *testing.B) {
	key := []byte(rfcKey)
	dst := make([]byte, 0, 32)
	b.ReportAllocs()
	for b.Loop() {
		dst = protocol.AppendAcceptKey(dst[:0], key)
	}
}
