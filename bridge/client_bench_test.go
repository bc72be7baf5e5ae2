package bridge

import (
	"strconv"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bridge/sign"
)

func benchSigner(b *testing.B) *sign.Signer {
	b.Helper()
	s, err := sign.ParseSigner("k1=bench-secret-0123456789abcdef")
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkSignCall is what -sign-key adds to each call on the worker:
// Client.sign over a prepared POST (digest, HMAC, four headers set).
func BenchmarkSignCall(b *testing.B) {
	for _, size := range []int{0, 32, 1 << 10, 64 << 10} {
		b.Run(strconv.Itoa(size)+"B", func(b *testing.B) {
			c, err := New(Config{Backend: "http://127.0.0.1:1/api/", Signer: benchSigner(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			call := AcquireCall()
			defer ReleaseCall(call)
			c.PreparePOST(call, Ids{ClientID: []byte("alice"), ConnID: []byte("5be1c0a2f3d4-1a")}, false)
			call.Req.SetBody(make([]byte, size))
			call.seq = 7
			call.Req.URI().DisablePathNormalizing = true
			c.sign(call) // grows call.sig and the header's storage
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				c.sign(call)
			}
		})
	}
}

// BenchmarkClient runs POSTs through the Client to a fasthttp echo
// backend on loopback with 256 calls in flight, as a busy event loop
// would submit them: one request per socket at a time (HostClient), and
// pipelined, 16 sockets carrying up to 16 requests each.
func BenchmarkClient(b *testing.B) {
	for _, tc := range []struct {
		name               string
		maxConns, pipeline int
		signed             bool
	}{
		{"hostclient_256_sockets", 256, 1, false},
		{"pipelined_16x16", 16, 16, false},
		{"hostclient_256_sockets_signed", 256, 1, true},
		{"pipelined_16x16_signed", 16, 16, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ln := echoServer(b, nil)
			var signer *sign.Signer
			if tc.signed {
				signer = benchSigner(b)
			}
			c, err := New(Config{Backend: "http://" + ln.Addr().String() + "/api/",
				MaxConns: tc.maxConns, Pipeline: tc.pipeline, Timeout: 10 * time.Second, Signer: signer})
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
