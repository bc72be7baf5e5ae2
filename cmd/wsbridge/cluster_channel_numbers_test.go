package main

import (
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// TestClusterChannelNumbers measures channel fan-out across three nodes
// (BENCHMARKS.md, "Channels across the cluster") against the same
// subscribers on one node without -cluster: WSBRIDGE_CHAN_SUBS subscribers
// (default 3,000) spread evenly over the nodes, WSBRIDGE_CHAN_MSGS messages
// (default 200) published at 20 a second through the first node; the
// deliveries per bridge CPU-second (summed over the bridge processes) and
// the publish-to-last-delivery time per message, p50/p99. Not a pass/fail
// test: it only runs with WSBRIDGE_CLUSTER_NUMBERS=1, without -race:
//
//	WSBRIDGE_CLUSTER_NUMBERS=1 go test -count=1 -run TestClusterChannelNumbers -v ./cmd/wsbridge/
func TestClusterChannelNumbers(t *testing.T) {
	if os.Getenv("WSBRIDGE_CLUSTER_NUMBERS") != "1" || raceEnabled {
		t.Skip("measurement: WSBRIDGE_CLUSTER_NUMBERS=1, without -race")
	}
	subs, _ := strconv.Atoi(os.Getenv("WSBRIDGE_CHAN_SUBS"))
	if subs <= 0 {
		subs = 3000
	}
	msgs, _ := strconv.Atoi(os.Getenv("WSBRIDGE_CHAN_MSGS"))
	if msgs <= 0 {
		msgs = 200
	}
	const rate = 20
	for _, nodes := range []int{1, 3, 1, 3} {
		b := channelBackend(t)
		args := []string{"-ping-interval", "0", "-log-level", "info", "-trim-memory=false"}
		var procs []*proc
		var nats *natsServer
		if nodes == 1 {
			procs = append(procs, startFastBridge(t, b.URL, args...))
		} else {
			nats = startNATS(t)
			for i := range nodes {
				p := startFastBridge(t, b.URL, append(args, "-cluster", nats.url(), "-node-id", "n"+strconv.Itoa(i))...)
				waitClusterUp(t, p, 1)
				procs = append(procs, p)
			}
		}
		conns := make([]*raw, subs)
		for i := range conns {
			conns[i] = subscribed(t, procs[i%nodes], "fan-"+strconv.Itoa(i), "fan")
		}
		waitPresence(t, procs[0], "fan", subs)

		lastAt := make([]atomic.Int64, msgs)
		var got atomic.Int64
		var wg sync.WaitGroup
		for _, r := range conns {
			wg.Go(func() {
				for range msgs {
					h, p, err := r.readFrame()
					if err != nil || h.OpCode != ws.OpText {
						return
					}
					at := time.Now().UnixNano()
					seq, _ := strconv.Atoi(string(p[:strings.IndexByte(string(p), ' ')]))
					for {
						old := lastAt[seq].Load()
						if at <= old || lastAt[seq].CompareAndSwap(old, at) {
							break
						}
					}
					got.Add(1)
				}
			})
		}
		cpu := func() (d time.Duration) {
			for _, p := range procs {
				d += procCPU(t, p.Cmd.Process.Pid)
			}
			return d
		}
		cpu0 := cpu()
		sentAt := make([]int64, msgs)
		hc := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1}}
		t0 := time.Now()
		for i := range msgs {
			if d := time.Until(t0.Add(time.Duration(i) * time.Second / rate)); d > 0 {
				time.Sleep(d) // open loop at rate
			}
			sentAt[i] = time.Now().UnixNano()
			resp, err := hc.Post("http://"+procs[0].admin+"/channel/fan", "text/plain", strings.NewReader(strconv.Itoa(i)+" "+strings.Repeat("x", 48)))
			if err != nil || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("publish %d: %v %v", i, resp, err)
			}
			resp.Body.Close()
		}
		wg.Wait()
		used := cpu() - cpu0
		hc.CloseIdleConnections()
		want := int64(subs) * int64(msgs)
		last := make([]time.Duration, 0, msgs)
		for i := range msgs {
			last = append(last, time.Duration(lastAt[i].Load()-sentAt[i]))
		}
		slices.Sort(last)
		line := fmt.Sprintf("nodes=%d: %d subscribers, %d messages at %d/s: %d of %d deliveries, bridge CPU %.2fs (summed), %.0f deliveries per CPU-second; publish to last delivery p50 %v p99 %v",
			nodes, subs, msgs, rate, got.Load(), want, used.Seconds(), float64(got.Load())/used.Seconds(),
			last[len(last)/2].Round(time.Microsecond), last[len(last)*99/100].Round(time.Microsecond))
		if nats != nil {
			line += fmt.Sprintf("; nats-server CPU %.2fs", procCPU(t, nats.cmd.Process.Pid).Seconds())
			for _, p := range procs {
				line += fmt.Sprintf("; %s in %v out %v", p.admin,
					p.metric(t, `wsbridge_cluster_channel_messages_total{dir="in"}`), p.metric(t, `wsbridge_cluster_channel_messages_total{dir="out"}`))
			}
		}
		t.Log(line)
		for _, r := range conns {
			r.conn.Close()
		}
		for _, p := range procs {
			_ = p.Stop(t, 9, 10*time.Second)
		}
		if nats != nil {
			nats.kill()
		}
	}
}
