package client

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/protocol"
)

// State is where a Client is in its life.
type State uint8

const (
	StateConnecting State = iota // dialling and upgrading
	StateOpen                    // connected; Send works
	StateWaiting                 // backing off before the next attempt
	StateStopped                 // done for good; see Err
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateOpen:
		return "open"
	case StateWaiting:
		return "waiting"
	}
	return "stopped"
}

// Event is one state change, given to Options.OnState.
type Event struct {
	State   State
	Attempt int           // consecutive failed attempts before this event
	Code    ws.StatusCode // close code that ended the last connection, if any
	Reason  string        // its close reason
	Status  int           // HTTP status of a refused upgrade, if any
	Delay   time.Duration // StateWaiting: how long until the next attempt
	Err     error         // what went wrong, if anything
}

// Errors a Client reports.
var (
	ErrNotOpen     = errors.New("client: not connected")
	ErrClosed      = errors.New("client: closed")
	ErrPongTimeout = errors.New("client: no reply to ping in time")
	ErrBadAccept   = errors.New("client: bad Sec-WebSocket-Accept")
)

// CloseError is the close frame that stopped a Client.
type CloseError struct {
	Code   ws.StatusCode
	Reason string
}

func (e *CloseError) Error() string {
	return fmt.Sprintf("client: closed by server with %d %q", e.Code, e.Reason)
}

// RefusedError is an upgrade the server answered with a status other than 101.
type RefusedError struct {
	Status     int
	Body       string
	RetryAfter time.Duration
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("client: upgrade refused with %d %q", e.Status, e.Body)
}

// Retryable says whether another attempt may succeed: 429 and 5xx are
// temporary (overload, drain, backend down); other statuses are the
// backend's answer and would only repeat.
func (e *RefusedError) Retryable() bool { return e.Status == 429 || e.Status >= 500 }

// Options configure a Client.
type Options struct {
	// URL is ws://host:port/<ClientId>[?query].
	URL string
	// Header is added to the upgrade request (Cookie, Authorization, ...).
	Header http.Header
	// Backoff is the reconnect policy; nil means the zero Backoff.
	Backoff *Backoff
	// PingInterval is how often the client pings the server; 0 means 20 s,
	// negative disables pings (and dead-server detection).
	PingInterval time.Duration
	// PongTimeout is how long after a ping the client waits for any frame
	// before it calls the server dead and reconnects; 0 means 10 s.
	PongTimeout time.Duration
	// HandshakeTimeout bounds the dial and upgrade; 0 means 10 s.
	HandshakeTimeout time.Duration
	// MaxMessage is the largest message accepted; 0 means 16 MiB.
	MaxMessage int
	// Dialer dials the TCP connection (LocalAddr, KeepAlive, ...); nil means
	// a zero net.Dialer.
	Dialer *net.Dialer
	// OnMessage gets every message; p is valid only during the call. It runs
	// on the connection's read goroutine: a slow callback delays reading.
	OnMessage func(p []byte, binary bool)
	// OnState gets every state change, in order, from the client's own
	// goroutine.
	OnState func(Event)
}

// Client is one WebSocket connection that reconnects by itself. It owns two
// goroutines while connected (read loop and pinger) and one while it backs
// off; Send and Close are safe for concurrent use.
type Client struct {
	opts    Options
	u       *url.URL
	backoff *Backoff

	state atomic.Uint32
	stop  chan struct{} // closed by Close
	done  chan struct{} // closed when run returns
	once  sync.Once

	wmu  sync.Mutex // guards conn writes and conn
	conn net.Conn

	errMu sync.Mutex
	err   error
}

// Dial starts a client and waits until its first connection is open. It
// keeps retrying temporary failures (with backoff) until ctx is done; a
// permanent refusal or ctx ending stops the client and is returned. After
// Dial returns, the client reconnects by itself until Close or a close code
// that says stop.
func Dial(ctx context.Context, o Options) (*Client, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if u.Scheme != "ws" {
		return nil, fmt.Errorf("client: scheme %q: only ws:// is supported", u.Scheme)
	}
	if o.PingInterval == 0 {
		o.PingInterval = 20 * time.Second
	}
	if o.PongTimeout <= 0 {
		o.PongTimeout = 10 * time.Second
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = 16 << 20
	}
	if o.Dialer == nil {
		o.Dialer = &net.Dialer{}
	}
	c := &Client{opts: o, u: u, backoff: o.Backoff, stop: make(chan struct{}), done: make(chan struct{})}
	if c.backoff == nil {
		c.backoff = &Backoff{}
	}
	opened := make(chan struct{})
	go c.run(opened)
	select {
	case <-opened:
		return c, nil
	case <-c.done:
		return nil, c.Err()
	case <-ctx.Done():
		c.Close()
		return nil, ctx.Err()
	}
}

// State is the current state.
func (c *Client) State() State { return State(c.state.Load()) }

// Done is closed when the client has stopped for good.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err says why the client stopped: ErrClosed after Close, a *CloseError or a
// *RefusedError when the server sent it away; nil while it runs.
func (c *Client) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

// Send writes one message (text unless binary). It fails with ErrNotOpen
// while the client is not connected; messages are not queued across
// reconnects.
func (c *Client) Send(p []byte, binary bool) error {
	op := ws.OpText
	if binary {
		op = ws.OpBinary
	}
	return c.write(op, p)
}

// Close sends a 1000 close, stops reconnecting and waits until the client's
// goroutines are done.
func (c *Client) Close() error {
	c.once.Do(func() {
		c.setErr(ErrClosed)
		close(c.stop)
		c.wmu.Lock()
		if c.conn != nil {
			_ = writeFrame(c.conn, ws.OpClose, closePayload(ws.StatusNormalClosure), time.Second)
			_ = c.conn.Close()
		}
		c.wmu.Unlock()
	})
	<-c.done
	return nil
}

func (c *Client) setErr(err error) {
	c.errMu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.errMu.Unlock()
}

func (c *Client) emit(ev Event) {
	c.state.Store(uint32(ev.State))
	if c.opts.OnState != nil {
		c.opts.OnState(ev)
	}
}

func (c *Client) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// run is the reconnect loop.
func (c *Client) run(opened chan struct{}) {
	defer close(c.done)
	attempt := 0
	for {
		c.emit(Event{State: StateConnecting, Attempt: attempt})
		conn, br, err := c.handshake()
		var ev Event
		var hint time.Duration
		if err == nil {
			attempt = 0
			c.wmu.Lock()
			c.conn = conn
			c.wmu.Unlock()
			if c.stopped() { // Close raced with the handshake
				_ = conn.Close()
				break
			}
			c.emit(Event{State: StateOpen})
			if opened != nil {
				close(opened)
				opened = nil
			}
			code, reason, err := c.serve(conn, br)
			c.wmu.Lock()
			c.conn = nil
			c.wmu.Unlock()
			_ = conn.Close()
			if c.stopped() {
				break
			}
			ev = Event{Code: code, Reason: reason, Err: err}
			if code != 0 {
				var act Action
				act, hint = OnClose(code, reason)
				if act == Stop {
					c.setErr(&CloseError{Code: code, Reason: reason})
					ev.State = StateStopped
					c.emit(ev)
					return
				}
			}
		} else {
			ev = Event{Err: err}
			var re *RefusedError
			if errors.As(err, &re) {
				ev.Status = re.Status
				hint = re.RetryAfter
				if !re.Retryable() {
					c.setErr(err)
					ev.State = StateStopped
					c.emit(ev)
					return
				}
			}
			if c.stopped() {
				break
			}
		}
		ev.State, ev.Attempt = StateWaiting, attempt
		ev.Delay = c.backoff.Next(attempt, hint)
		attempt++
		c.emit(ev)
		t := time.NewTimer(ev.Delay)
		select {
		case <-t.C:
		case <-c.stop:
			t.Stop()
			c.emit(Event{State: StateStopped, Err: ErrClosed})
			return
		}
	}
	c.emit(Event{State: StateStopped, Err: ErrClosed})
}

const wsKeyGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// handshake dials and upgrades; the returned reader may hold frames that
// came with the 101.
func (c *Client) handshake() (net.Conn, *bufio.Reader, error) {
	deadline := time.Now().Add(c.opts.HandshakeTimeout)
	host := c.u.Host
	if c.u.Port() == "" {
		host = net.JoinHostPort(c.u.Hostname(), "80")
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	go func() {
		select {
		case <-c.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	conn, err := c.opts.Dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, nil, fmt.Errorf("client: dial %s: %w", host, err)
	}
	_ = conn.SetDeadline(deadline)
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	key := base64.StdEncoding.EncodeToString(nonce[:])
	var b strings.Builder
	fmt.Fprintf(&b, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", c.u.RequestURI(), c.u.Host, key)
	for k, vs := range c.opts.Header {
		for _, v := range vs {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
	}
	b.WriteString("\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("client: upgrade: %w", err)
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("client: upgrade: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		conn.Close()
		return nil, nil, &RefusedError{Status: resp.StatusCode, Body: string(body),
			RetryAfter: ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	}
	sum := sha1.Sum([]byte(key + wsKeyGUID))
	if resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		conn.Close()
		return nil, nil, ErrBadAccept
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, br, nil
}

// serve reads frames until the connection ends, and returns the server's
// close code and reason (0 if it ended without a close frame).
func (c *Client) serve(conn net.Conn, br *bufio.Reader) (ws.StatusCode, string, error) {
	var lastRead atomic.Int64
	lastRead.Store(time.Now().UnixNano())
	dead := make(chan struct{})
	var pingErr atomic.Value
	if c.opts.PingInterval > 0 {
		go c.pinger(conn, &lastRead, dead, &pingErr)
	}
	defer close(dead)
	var msg []byte
	var msgOp ws.OpCode
	for {
		h, err := ws.ReadHeader(br)
		if err != nil {
			if e, ok := pingErr.Load().(error); ok {
				err = e
			}
			return 0, "", err
		}
		if h.Length > int64(c.opts.MaxMessage) || int64(len(msg))+h.Length > int64(c.opts.MaxMessage) {
			c.closeConn(conn, ws.StatusMessageTooBig)
			return 0, "", fmt.Errorf("client: message over %d bytes", c.opts.MaxMessage)
		}
		start := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(br, msg[start:]); err != nil {
			return 0, "", err
		}
		if h.Masked {
			ws.Cipher(msg[start:], h.Mask, 0)
		}
		lastRead.Store(time.Now().UnixNano())
		if h.OpCode.IsControl() {
			p := msg[start:]
			msg = msg[:start]
			switch h.OpCode {
			case ws.OpPing:
				_ = c.write(ws.OpPong, p)
			case ws.OpClose:
				code, reason := ws.StatusNoStatusRcvd, ""
				if len(p) >= 2 {
					code, reason = ws.StatusCode(uint16(p[0])<<8|uint16(p[1])), string(p[2:])
				}
				c.closeConn(conn, code)
				return code, reason, nil
			}
			continue
		}
		if h.OpCode != ws.OpContinuation {
			msgOp = h.OpCode
		}
		if !h.Fin {
			continue
		}
		if c.opts.OnMessage != nil {
			c.opts.OnMessage(msg, msgOp == ws.OpBinary)
		}
		msg = msg[:0]
	}
}

// closeConn echoes a close frame; the caller closes the socket.
func (c *Client) closeConn(conn net.Conn, code ws.StatusCode) {
	c.wmu.Lock()
	_ = writeFrame(conn, ws.OpClose, closePayload(code), time.Second)
	c.wmu.Unlock()
}

// pinger pings every PingInterval and kills the connection when nothing at
// all comes back within PongTimeout of a ping.
func (c *Client) pinger(conn net.Conn, lastRead *atomic.Int64, dead chan struct{}, why *atomic.Value) {
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-dead:
			return
		}
		sent := time.Now()
		if err := c.write(ws.OpPing, nil); err != nil {
			return
		}
		w := time.NewTimer(c.opts.PongTimeout)
		select {
		case <-w.C:
		case <-dead:
			w.Stop()
			return
		}
		if lastRead.Load() < sent.UnixNano() {
			why.Store(ErrPongTimeout)
			_ = conn.Close()
			return
		}
	}
}

// closePayload is a close frame's payload echoing code (none for 1005).
func closePayload(code ws.StatusCode) []byte {
	if code == 0 || code == ws.StatusNoStatusRcvd {
		return nil
	}
	return []byte{byte(code >> 8), byte(code)}
}

func (c *Client) write(op ws.OpCode, p []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.conn == nil {
		return ErrNotOpen
	}
	return writeFrame(c.conn, op, p, 10*time.Second)
}

// writeFrame writes one masked frame; the caller holds wmu.
func writeFrame(conn net.Conn, op ws.OpCode, p []byte, timeout time.Duration) error {
	var mask [4]byte
	_, _ = rand.Read(mask[:])
	frame := protocol.AppendClientFrame(make([]byte, 0, len(p)+14), op, true, mask, p)
	_ = conn.SetWriteDeadline(time.Now().Add(timeout))
	if _, err := conn.Write(frame); err != nil {
		return fmt.Errorf("client: write: %w", err)
	}
	return nil
}
