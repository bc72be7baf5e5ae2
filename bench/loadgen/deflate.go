package loadgen

import (
	"bytes"
	"io"
	"strconv"

	"github.com/klauspost/compress/flate"
)

// zclient is a loop's permessage-deflate state (Config.Deflate): no context
// takeover either way, so one compressor and one inflater serve every
// connection of the loop, reset per message.
type zclient struct {
	w   *flate.Writer
	out bytes.Buffer
	r   io.ReadCloser
	src bytes.Reader
	in  []byte
}

func (l *loop) zc() *zclient {
	if l.z == nil {
		l.z = &zclient{}
		l.z.w, _ = flate.NewWriter(&l.z.out, flate.BestSpeed)
	}
	return l.z
}

// deflate compresses p as one message; valid until the next call.
func (z *zclient) deflate(p []byte) []byte {
	z.out.Reset()
	z.w.Reset(&z.out)
	_, _ = z.w.Write(p)
	_ = z.w.Flush()
	b := z.out.Bytes()
	return b[:len(b)-4] // the sync flush's 00 00 ff ff (RFC 7692 §7.2.1)
}

var deflateTail = []byte("\x00\x00\xff\xff\x01\x00\x00\xff\xff")

// inflate inflates one compressed message; valid until the next call.
func (z *zclient) inflate(p []byte) ([]byte, error) {
	z.in = append(append(z.in[:0], p...), deflateTail...)
	z.src.Reset(z.in)
	if z.r == nil {
		z.r = flate.NewReader(&z.src)
	} else if err := z.r.(flate.Resetter).Reset(&z.src, nil); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if _, err := io.Copy(&out, io.LimitReader(z.r, maxFrame)); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// jsonWords vary the records of AppendJSONMessage.
var jsonWords = [...]string{"hello", "world", "order", "shipped", "pending", "alice", "bob", "carol",
	"price", "update", "chat", "message", "room", "lobby", "ready", "typing", "online", "away"}

// AppendJSONMessage is AppendMessage padded with JSON-like records (ids,
// names, numbers and words that vary with seq) instead of 'x': chat or
// API traffic as permessage-deflate would see it, roughly 3–4× compressible.
func AppendJSONMessage(dst []byte, seq uint32, now int64, size int) []byte {
	start := len(dst)
	dst = strconv.AppendUint(dst, uint64(seq), 10)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, now, 10)
	dst = append(dst, ' ', '[')
	head := len(dst) - start
	x := uint64(seq)*0x9e3779b97f4a7c15 + 1
	for i := 0; len(dst)-start < size; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		dst = append(dst, `{"id":`...)
		dst = strconv.AppendUint(dst, x%1000000, 10)
		dst = append(dst, `,"user":"`...)
		dst = append(dst, jsonWords[x>>20%uint64(len(jsonWords))]...)
		dst = strconv.AppendUint(dst, x>>30%100, 10)
		dst = append(dst, `","text":"`...)
		dst = append(dst, jsonWords[x>>40%uint64(len(jsonWords))]...)
		dst = append(dst, ' ')
		dst = append(dst, jsonWords[x>>50%uint64(len(jsonWords))]...)
		dst = append(dst, `","score":`...)
		dst = strconv.AppendFloat(dst, float64(x%10000)/100, 'f', 2, 64)
		dst = append(dst, `},`...)
	}
	return dst[:start+max(size, head)]
}
