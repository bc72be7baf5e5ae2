package main

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/wsbridge/wsbridge/bench/backend"
)

// A drain that starts while clients keep connecting: the listener stops
// without the engine under it failing an accept(2) (gnet stops the whole
// engine on any accept error, and every connection with it), the drain
// runs to its end and the process exits 0.
func TestDrainUnderConnectFlood(t *testing.T) {
	for _, reuse := range []bool{false, true} {
		name := "shared"
		if reuse {
			name = "reuseport"
		}
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, backend.Options{})
			args := []string{"-drain-timeout", "2s", "-ping-interval", "0"}
			if reuse {
				args = append(args, "-reuseport")
			}
			p := startBridge(t, b.URL, args...)
			held := rawUpgrade(t, p.ws, "held")
			stop := make(chan struct{})
			var dials atomic.Int64
			var wg sync.WaitGroup
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					deadline := time.Now().Add(10 * time.Second)
					for time.Now().Before(deadline) {
						select {
						case <-stop:
							return
						default:
						}
						c, err := net.DialTimeout("tcp", p.ws, time.Second)
						if err != nil {
							continue
						}
						dials.Add(1)
						_ = c.Close()
					}
				}()
			}
			waitFor(t, 5*time.Second, func() error {
				if n := dials.Load(); n < 500 {
					return fmt.Errorf("%d connects so far", n)
				}
				return nil
			})
			err := p.Stop(t, syscall.SIGTERM, 20*time.Second)
			close(stop)
			wg.Wait()
			held.expectClose(1012)
			logs := p.Logs()
			if strings.Contains(logs, "Accept() failed") {
				t.Errorf("gnet failed an accept during the drain:\n%s", grepLines(logs, "Accept() failed"))
			}
			if err != nil {
				t.Errorf("exit: %v (want 0 after a drain)", err)
			}
		})
	}
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
