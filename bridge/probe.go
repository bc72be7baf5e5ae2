package bridge

import (
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/wsbridge/wsbridge/protocol"
	"go.uber.org/zap"
)

// Probing the backend while the circuit is open.
//
// A client's upgrade is never the probe: it could land on a socket the
// backend closed long ago and fail again, and a client would wait for the
// outcome. Instead one goroutine per open period sends
//
//	OPTIONS <backend>   (no ClientId; Wsbridge-Probe: 1; Connection: close)
//
// on a fresh connection, first after Cooldown and then at intervals that
// double up to MaxCooldown. Any answer but 502, 503 or 504 (a proxy in front
// of a dead application) closes the circuit; so does any call of a connected
// client that succeeds meanwhile.

// probeTimeout bounds one probe (and never exceeds Config.Timeout): a
// backend slower than this to answer an OPTIONS is not back yet.
const probeTimeout = 2 * time.Second

var (
	methodOPTIONS = []byte(fasthttp.MethodOptions)
	hdrProbe      = []byte(protocol.HeaderProbe)
	valueOne      = []byte("1")
)

// errProbeStatus is a probe answered with 502, 503 or 504.
var errProbeStatus = errors.New("bridge: probe answered with a gateway error")

// opened is called once when the circuit opens: the sockets the workers
// hold are likely dead (dropped), and a prober starts.
func (c *Client) opened(call *Call) {
	c.dropConns()
	c.log.Warn("backend circuit open: upgrades get 503 until the backend answers a probe",
		zap.Int("failures", c.breaker.cfg.Failures), zap.String("last_method", call.Method.String()),
		zap.String("last_outcome", string(call.Outcome)), zap.Int("last_status", call.Resp.StatusCode()),
		zap.NamedError("last_error", call.Err))
	go c.probeLoop()
}

// closed logs the end of an open period.
func (c *Client) closedCircuit(openFor time.Duration, by string) {
	c.log.Info("backend circuit closed: the backend answers again",
		zap.Duration("open_for", openFor), zap.String("by", by))
}

// probeLoop probes until the circuit closes or the Client is closed.
func (c *Client) probeLoop() {
	wait := c.breaker.cfg.Cooldown
	t := time.NewTimer(wait)
	defer t.Stop()
	for probes := 1; ; probes++ {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if !c.breaker.shedding() {
			return // a client's call closed it
		}
		err := c.probe()
		if err == nil {
			if closed, openFor := c.breaker.success(time.Now()); closed {
				c.closedCircuit(openFor, fmt.Sprintf("probe %d", probes))
			}
			return
		}
		if ce := c.log.Check(zap.DebugLevel, "backend probe failed"); ce != nil {
			ce.Write(zap.Int("probe", probes), zap.Error(err))
		}
		wait = min(2*wait, c.breaker.cfg.MaxCooldown)
		t.Reset(wait)
	}
}

// probe sends one OPTIONS to the backend's base URL on a new connection and
// reports nil when the backend answered with anything but a gateway error.
func (c *Client) probe() error {
	var p pconn
	deadline := time.Now().Add(min(c.cfg.Timeout, probeTimeout))
	if err := c.dial(&p, deadline); err != nil {
		return err
	}
	defer p.close()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURIBytes(c.base)
	req.URI().DisablePathNormalizing = true
	req.Header.SetMethodBytes(methodOPTIONS)
	req.Header.SetCanonical(hdrProbe, valueOne)
	req.Header.SetUserAgentBytes(userAgent)
	req.SetConnectionClose()
	if err := p.nc.SetDeadline(deadline); err != nil {
		return fmt.Errorf("bridge: probe: %w", err)
	}
	if err := req.Write(p.bw); err != nil {
		return fmt.Errorf("bridge: probe: %w", err)
	}
	if err := p.bw.Flush(); err != nil {
		return fmt.Errorf("bridge: probe: %w", err)
	}
	if err := resp.Read(p.br); err != nil {
		return fmt.Errorf("bridge: probe: %w", timeoutErr(err))
	}
	switch s := resp.StatusCode(); s {
	case fasthttp.StatusBadGateway, fasthttp.StatusServiceUnavailable, fasthttp.StatusGatewayTimeout:
		return fmt.Errorf("%w: %d", errProbeStatus, s)
	}
	return nil
}
