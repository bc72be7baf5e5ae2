package bridge

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkClient runs POSTs through the Client to a fasthttp echo
// backend on loopback with 256 calls in flight, as a busy event loop
// would submit them: one request per socket at a time (HostClient), and
// pipelined, 16 sockets carrying up to 16 requests each.
func BenchmarkClient(b *testing.B) {
	for _, tc := range []struct {
		name               string
		maxConns, pipeline int
	}{
		{"hostclient_256_sockets", 256, 1},
		{"pipelined_16x16", 16, 16},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln := echoServer(b, nil)
			c, err := New(Config{Backend: "http://" + ln.Addr().String() + "/api/",
				MaxConns: tc.maxConns, Pipeline: tc.pipeline, Timeout: 10 * time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			const inFlight = 256
			d := make(done, inFlight)
			body := []byte("a message of some 32 bytes .....")
			submit := func(i int) {
				call := AcquireCall()
				call.Owner = d
				c.PreparePOST(call, Ids{ClientID: []byte("bench" + strconv.Itoa(i%inFlight)), ConnID: []byte("1")}, false)
				call.Req.SetBody(body)
				c.Submit(call)
			}
			for i := range inFlight {
				submit(i)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				call := <-d
				if call.Outcome != OutcomeOK {
					b.Fatalf("outcome %s: %v", call.Outcome, call.Err)
				}
				ReleaseCall(call)
				submit(i)
			}
			b.StopTimer()
			for range inFlight {
				ReleaseCall(<-d)
			}
		})
	}
}
