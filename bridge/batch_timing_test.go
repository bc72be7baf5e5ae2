package bridge

import (
	"strconv"
	"testing"
)

// BenchmarkBatchCodec: encoding 100 messages' records (64-byte bodies) and
// parsing a 100-reply answer, per message.
func BenchmarkBatchCodec(b *testing.B) {
	c, err := New(Config{Backend: "http://127.0.0.1:1/", BatchURL: "http://127.0.0.1:1/batch"})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	calls := make([]*Call, 100)
	var answer []byte
	for i := range calls {
		call := AcquireCall()
		c.PreparePOST(call, Ids{ClientID: []byte("client-" + strconv.Itoa(i)), ConnID: []byte("p-" + strconv.Itoa(i))}, false)
		call.Req.AppendBody(make([]byte, 64))
		calls[i] = call
		answer = appendReply(answer, batchReply{body: make([]byte, 64)})
	}
	buf := make([]byte, 0, 16<<10)
	replies := make([]batchReply, 0, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(answer)))
	for b.Loop() {
		buf = buf[:0]
		for _, call := range calls {
			buf = c.bat.appendRecord(buf, call)
		}
		replies, _, _ = parseBatchReply(answer, len(calls), replies)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(calls)), "ns/msg")
	for _, call := range calls {
		ReleaseCall(call)
	}
}
