package bench

import (
	"bufio"
	"bytes"
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/bench/loadgen"
)

// pusher plays the backend pushing to clients: POST /<ClientId> on the
// bridge's admin API from Inflight goroutines over one fasthttp HostClient.
type pusher struct {
	cfg  *Config
	hc   *fasthttp.HostClient
	seq  atomic.Int64
	ok   atomic.Int64
	fail atomic.Int64

	firstErr atomic.Pointer[string]
}

func newPusher(cfg *Config) *pusher {
	n := cfg.Inflight
	if n <= 0 {
		n = 32
	}
	return &pusher{cfg: cfg, hc: &fasthttp.HostClient{
		Addr: cfg.Admin, MaxConns: n, MaxConnWaitTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
		MaxIdemponentCallAttempts: 1,
	}}
}

// run pushes until deadline: as fast as replies come, or at -rate.
func (p *pusher) run(ctx context.Context, deadline time.Time) {
	n := p.hc.MaxConns
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			var uri, body []byte
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(deadline) {
					return
				}
				i := p.seq.Add(1) - 1
				if p.cfg.Rate > 0 {
					due := start.Add(time.Duration(float64(i) / p.cfg.Rate * float64(time.Second)))
					if due.After(deadline) {
						return
					}
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
					now = time.Now()
				}
				uri = append(uri[:0], "http://"...)
				uri = append(uri, p.cfg.Admin...)
				uri = append(uri, '/')
				uri = append(uri, p.cfg.IDPrefix...)
				uri = strconv.AppendInt(uri, i%int64(p.cfg.Conns), 10)
				req.SetRequestURIBytes(uri)
				req.Header.SetMethod(fasthttp.MethodPost)
				req.Header.SetContentType("text/plain; charset=utf-8")
				body = loadgen.AppendMessage(body[:0], uint32(i), now.UnixNano(), p.cfg.Size)
				req.SetBodyRaw(body)
				err := p.hc.Do(req, resp)
				switch {
				case err != nil:
					p.fail.Add(1)
					p.note(err.Error())
				case resp.StatusCode() == fasthttp.StatusOK:
					p.ok.Add(1)
				default:
					p.fail.Add(1)
					p.note("status " + strconv.Itoa(resp.StatusCode()) + ": " + string(resp.Body()))
				}
			}
		})
	}
	wg.Wait()
}

func (p *pusher) note(s string) { p.firstErr.CompareAndSwap(nil, &s) }

// scrapeSum sums the values of the /metrics series whose line starts with
// prefix (all label combinations of one metric, say).
func scrapeSum(admin, prefix string) (int64, bool) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + admin + "/metrics")
	if err := fasthttp.DoTimeout(req, resp, 2*time.Second); err != nil || resp.StatusCode() != 200 {
		return 0, false
	}
	return sumSeries(resp.Body(), prefix)
}

func sumSeries(body []byte, prefix string) (int64, bool) {
	var sum float64
	found := false
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte(prefix)) {
			continue
		}
		i := bytes.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(string(line[i+1:]), 64)
		if err != nil {
			continue
		}
		sum += v
		found = true
	}
	return int64(sum), found
}
