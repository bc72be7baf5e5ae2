package bench

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/loadgen"
)

// FanoutChannel is the channel the fan-out scenario's connections join
// (the mock backend's GET answers ?subscribe= with Wsbridge-Subscribe).
const FanoutChannel = "fan"

// FanoutResult is the fan-out scenario's own measure: one message to every
// connection, -rate times a second, either published once to a channel or
// (-fanout-push) pushed to each connection through the admin API.
type FanoutResult struct {
	Mode          string  `json:"mode"`    // "channel" or "push"
	Bridges       int     `json:"bridges"` // -admin addresses: bridge CPU is their sum
	Messages      int     `json:"messages"`
	Complete      int     `json:"complete"` // messages every connection got
	Deliveries    int64   `json:"deliveries"`
	CPU           float64 `json:"bridge_cpu_s"` // summed over the bridges
	DeliveriesCPU float64 `json:"deliveries_per_cpu_sec"`
	// Last is publish (or first push) to the last connection's receipt, per message.
	Last Latency `json:"last_delivery_ms"`
}

// fanout holds Conns connections subscribed to FanoutChannel and sends one
// message to all of them -rate times a second (default 10) for -duration.
// The connections may be spread over worker processes (-procs) and over
// several bridges of one cluster (-admin a1,a2,...; -url is then a port
// they share with -reuseport): messages go to the first admin address and
// reach the other bridges' subscribers through the cluster.
func (r *runner) fanout(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	if r.be == nil {
		return nil, fmt.Errorf("bench: fanout needs the in-process mock backend (-backend addr): its GET subscribes")
	}
	admins := cfg.admins()
	if len(admins) == 0 {
		return nil, fmt.Errorf("bench: fanout needs -admin")
	}
	rate := cfg.Rate
	if rate <= 0 {
		rate = 10
	}
	n := int(rate * cfg.Duration.Seconds())
	const track = 1 << 16
	if n <= 0 || n >= track {
		return nil, fmt.Errorf("bench: fanout: %d messages (rate × duration) must be 1…%d", n, track-1)
	}
	if err := r.launch(loadgen.Hold, cfg.Conns, func(c *loadgen.Config) {
		c.Query = "subscribe=" + FanoutChannel
		c.Track = track
		// A connect burst meets the bridges' admission control (503 past
		// -max-pending-upgrades): retry with backoff as a client would.
		c.Reconnect = true
	}); err != nil {
		return nil, err
	}
	res := r.newResult()
	if err := r.allHeld(ctx, cfg.Conns); err != nil {
		_ = r.end(res)
		return res, err
	}
	fr := &FanoutResult{Mode: "channel", Messages: n, Bridges: len(admins)}
	if cfg.FanoutPush {
		fr.Mode = "push"
	}
	// Pushes too go to the first bridge: it forwards those for clients on
	// other nodes through the cluster.
	hc := &fasthttp.HostClient{Addr: admins[0], MaxConns: max(cfg.Inflight, 32), MaxConnWaitTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	send := func(seq uint32, now int64) error {
		body := loadgen.AppendMessage(nil, seq, now, cfg.Size)
		if !cfg.FanoutPush {
			return adminPost(hc, "/channel/"+FanoutChannel, body, fasthttp.StatusAccepted)
		}
		// One push per connection, hc.MaxConns at a time.
		var wg sync.WaitGroup
		errs := make(chan error, 1)
		next := make(chan int)
		for range hc.MaxConns {
			wg.Go(func() {
				for i := range next {
					if err := adminPost(hc, "/"+cfg.IDPrefix+strconv.Itoa(i), body, fasthttp.StatusOK); err != nil {
						select {
						case errs <- err:
						default:
						}
					}
				}
			})
		}
		for i := range cfg.Conns {
			next <- i
		}
		close(next)
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	// Warm up (and check) with one message, not measured.
	if err := send(track-1, time.Now().UnixNano()); err != nil {
		_ = r.end(res)
		return res, err
	}
	r.until(ctx, time.Now().Add(30*time.Second), func(loadgen.Totals) bool {
		got, _ := r.f.seqStats(track - 1)
		return got >= int64(cfg.Conns)
	})
	cpu0, err := bridgesCPU(admins)
	if err != nil {
		_ = r.end(res)
		return res, err
	}
	recv0 := r.poll().Recv
	sentAt := make([]int64, n)
	t0 := time.Now()
	var sendErr error
	for i := range n {
		due := t0.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if d := time.Until(due); d > 0 {
			time.Sleep(d) // open loop at -rate
		}
		if ctx.Err() != nil {
			break
		}
		sentAt[i] = time.Now().UnixNano()
		if err := send(uint32(i), sentAt[i]); err != nil && sendErr == nil {
			sendErr = err
		}
		r.poll()
	}
	want := int64(n) * int64(cfg.Conns)
	r.until(ctx, time.Now().Add(60*time.Second), func(t loadgen.Totals) bool { return t.Recv-recv0 >= want })
	cpu1, cpuErr := bridgesCPU(admins)
	res.Seconds = time.Since(t0).Seconds()
	fr.Deliveries = r.cur.Recv - recv0
	if cpuErr == nil {
		fr.CPU = cpu1 - cpu0
	}
	if fr.CPU > 0 {
		fr.DeliveriesCPU = float64(fr.Deliveries) / fr.CPU
	}
	err = errors.Join(r.end(res), cpuErr)
	// After end: the workers' last reports carry every delivery's count.
	var last []float64
	for i := range n {
		got, at := r.f.seqStats(uint32(i))
		if got >= int64(cfg.Conns) {
			fr.Complete++
			last = append(last, float64(at-sentAt[i])/1e6)
		}
	}
	fr.Last = percentiles(last)
	res.Fanout = fr
	res.MsgsPerSec = float64(fr.Deliveries) / res.Seconds
	if sendErr != nil {
		fmt.Fprintf(r.errw, "fanout: first error: %v\n", sendErr)
		res.ErrorKinds = map[string]int64{"send": 1}
	}
	return res, err
}

// adminPost POSTs body to the admin API and wants status.
func adminPost(hc *fasthttp.HostClient, path string, body []byte, status int) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + hc.Addr + path)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("text/plain; charset=utf-8")
	req.SetBodyRaw(body)
	if err := hc.Do(req, resp); err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if resp.StatusCode() != status {
		return fmt.Errorf("POST %s: status %d: %s", path, resp.StatusCode(), resp.Body())
	}
	return nil
}

// bridgesCPU sums process_cpu_seconds_total over the bridges' admin APIs;
// any that does not answer is an error (a missing bridge is not 0 s).
func bridgesCPU(admins []string) (float64, error) {
	var sum float64
	for _, a := range admins {
		v, ok := scrapeFloat(a, "process_cpu_seconds_total")
		if !ok {
			return 0, fmt.Errorf("bench: fanout: no process_cpu_seconds_total from http://%s/metrics", a)
		}
		sum += v
	}
	return sum, nil
}

// scrapeFloat reads one series' value from the admin API's /metrics.
func scrapeFloat(admin, series string) (float64, bool) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + admin + "/metrics")
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
		return 0, false
	}
	for _, line := range splitLines(resp.Body()) {
		if rest, ok := cutPrefix(line, series+" "); ok {
			v, err := strconv.ParseFloat(rest, 64)
			return v, err == nil
		}
	}
	return 0, false
}

func splitLines(b []byte) []string {
	var out []string
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		out = append(out, string(b[:i]))
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}

func cutPrefix(s, p string) (string, bool) {
	if len(s) >= len(p) && s[:len(p)] == p {
		return s[len(p):], true
	}
	return "", false
}

// percentiles summarises samples in milliseconds.
func percentiles(ms []float64) Latency {
	if len(ms) == 0 {
		return Latency{}
	}
	slices.Sort(ms)
	at := func(q float64) float64 { return ms[min(len(ms)-1, int(q*float64(len(ms))))] }
	return Latency{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: ms[len(ms)-1], N: uint64(len(ms))}
}
