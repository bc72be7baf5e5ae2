//go:build !race

package bridge

import "testing"

// TestBatchCodecAllocs: encoding a message's record and parsing an answer
// allocate nothing once their buffers have grown.
func TestBatchCodecAllocs(t *testing.T) {
	c, err := New(Config{Backend: "http://127.0.0.1:1/", BatchURL: "http://127.0.0.1:1/batch"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := AcquireCall()
	defer ReleaseCall(call)
	c.PreparePOST(call, Ids{ClientID: []byte("alice"), ConnID: []byte("p-1"), XFF: []byte("10.0.0.1")}, false)
	call.Req.AppendBody([]byte("hello, a message of some length"))
	call.Req.Header.SetCanonical([]byte(metaPrefix+"User"), []byte("42"))
	answer := []byte("text 5\nhello\nbinary 3 Room=x\n\x00\n\xff\n")
	buf := make([]byte, 0, 1024)
	replies := make([]batchReply, 0, 4)
	n := testing.AllocsPerRun(200, func() {
		buf = c.bat.appendRecord(buf[:0], call)
		replies, _, _ = parseBatchReply(answer, 2, replies)
	})
	if n != 0 {
		t.Fatalf("%v allocations per record and answer, want 0", n)
	}
}
