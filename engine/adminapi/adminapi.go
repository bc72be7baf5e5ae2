package adminapi

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"github.com/valyala/fasthttp/pprofhandler"

	"github.com/wsbridge/wsbridge/engine"
	"github.com/wsbridge/wsbridge/protocol"
)

// Config configures the admin API.
type Config struct {
	Token string // if set, every call but /healthz and /readyz needs "Authorization: Bearer <Token>"
	Pprof bool   // serve /debug/pprof/
	// Remote reaches the ClientIds this node does not hold (-cluster); nil
	// on a node alone.
	Remote Remote
	NodeID string // "node" in the info JSON of a local connection, with Remote
}

// Remote is the cluster as the admin API sees it (engine/cluster.Bus):
// the calls for a ClientId no local connection holds. Each answers 200,
// 404 (connected nowhere) or 503 (the bus down, no answer in time, or a
// slow consumer there): never a false 404.
type Remote interface {
	Push(id, payload []byte, binary bool) int
	Kick(id []byte, code ws.StatusCode, reason string) int
	Lookup(id []byte) (infoJSON []byte, status int)
}

var (
	bearerPrefix  = []byte("Bearer ")
	pathHealthz   = []byte("/healthz")
	pathReadyz    = []byte("/readyz")
	pathMetrics   = []byte("/metrics")
	pathPprof     = []byte("/debug/pprof")
	pathChannel   = []byte("/channel/")
	textOK        = []byte("ok\n")
	errBodyTooBig = errors.New("engine: push body over -max-message")
)

// New returns the admin API server of s. It is a fasthttp server so that
// pushes cost little; /metrics and pprof go through adaptors.
func New(s *engine.Server, cfg Config) *fasthttp.Server {
	m := s.Metrics()
	metrics := fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	token := []byte(cfg.Token)
	maxMessage := s.MaxMessage()
	h := func(ctx *fasthttp.RequestCtx) {
		path := ctx.Path()
		switch {
		case bytes.Equal(path, pathHealthz):
			ctx.SetBody(textOK)
			return
		case bytes.Equal(path, pathReadyz):
			if !s.Ready() {
				ctx.SetStatusCode(fasthttp.StatusServiceUnavailable)
				ctx.SetBodyString("not ready\n")
				return
			}
			ctx.SetBody(textOK)
			return
		}
		if len(token) > 0 {
			auth := ctx.Request.Header.Peek(fasthttp.HeaderAuthorization)
			if !bytes.HasPrefix(auth, bearerPrefix) || subtle.ConstantTimeCompare(auth[len(bearerPrefix):], token) != 1 {
				ctx.Error("unauthorized\n", fasthttp.StatusUnauthorized) // resets headers: set them after
				ctx.Response.Header.Set(fasthttp.HeaderWWWAuthenticate, `Bearer realm="wsbridge"`)
				return
			}
		}
		switch {
		case bytes.Equal(path, pathMetrics):
			metrics(ctx)
			return
		case bytes.HasPrefix(path, pathPprof):
			if cfg.Pprof {
				pprofhandler.PprofHandler(ctx)
			} else {
				ctx.Error("pprof not enabled\n", fasthttp.StatusNotFound)
			}
			return
		}
		if bytes.HasPrefix(path, pathChannel) {
			channel(s, channelRemote(cfg.Remote), m, maxMessage, ctx, path[len(pathChannel):])
			return
		}
		id := path[1:]
		if !protocol.ValidClientID(id) {
			ctx.Error("invalid ClientId\n", fasthttp.StatusBadRequest)
			return
		}
		remote := cfg.Remote != nil && !s.Holds(id)
		switch {
		case ctx.IsPost():
			push(s, cfg.Remote, remote, m, maxMessage, ctx, id)
		case ctx.IsDelete():
			kick(s, cfg.Remote, remote, ctx, id)
		case ctx.IsGet():
			if remote {
				b, status := cfg.Remote.Lookup(id)
				if status != fasthttp.StatusOK {
					answer(ctx, status)
					return
				}
				ctx.SetContentType("application/json")
				ctx.SetBody(append(b, '\n'))
				return
			}
			info, ok := s.Lookup(id)
			if !ok {
				ctx.Error("not found\n", fasthttp.StatusNotFound)
				return
			}
			if cfg.Remote != nil {
				info.Node = cfg.NodeID
			}
			b, _ := json.Marshal(info)
			ctx.SetContentType("application/json")
			ctx.SetBody(append(b, '\n'))
		default:
			ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
			ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, POST, DELETE")
		}
	}
	return &fasthttp.Server{
		Handler: h,
		Name:    "wsbridge",
		// Read somewhat more than -max-message so that an oversized push
		// gets a clean 413 from push rather than a reset; far larger
		// bodies are cut off by fasthttp itself.
		MaxRequestBodySize: int(4*maxMessage) + 4<<10,
		ReadTimeout:        30 * time.Second,
		IdleTimeout:        2 * time.Minute,
		ErrorHandler: func(ctx *fasthttp.RequestCtx, err error) {
			if errors.Is(err, fasthttp.ErrBodyTooLarge) {
				m.PushTooBig()
				ctx.Error("push body over -max-message\n", fasthttp.StatusRequestEntityTooLarge)
				return
			}
			ctx.Error("bad request\n", fasthttp.StatusBadRequest)
		},
	}
}

func push(s *engine.Server, r Remote, remote bool, m *engine.Metrics, maxMessage int64, ctx *fasthttp.RequestCtx, id []byte) {
	body := ctx.PostBody()
	if int64(len(body)) > maxMessage {
		m.PushTooBig()
		ctx.Error(errBodyTooBig.Error()+"\n", fasthttp.StatusRequestEntityTooLarge)
		return
	}
	binary := protocol.IsBinaryContentType(ctx.Request.Header.ContentType())
	if !binary && !utf8.Valid(body) {
		m.PushBadRequest()
		ctx.Error("text push is not valid UTF-8 (send application/octet-stream for binary)\n", fasthttp.StatusBadRequest)
		return
	}
	if remote {
		answer(ctx, r.Push(id, body, binary))
		return
	}
	switch s.Push(id, body, binary) {
	case fasthttp.StatusOK:
		ctx.SetBody(textOK)
	case fasthttp.StatusNotFound:
		ctx.Error("not found\n", fasthttp.StatusNotFound)
	default:
		ctx.Error("slow consumer\n", fasthttp.StatusServiceUnavailable)
	}
}

// answer writes a cross-node call's status.
func answer(ctx *fasthttp.RequestCtx, status int) {
	switch status {
	case fasthttp.StatusOK:
		ctx.SetBody(textOK)
	case fasthttp.StatusNotFound:
		ctx.Error("not found\n", fasthttp.StatusNotFound)
	default:
		ctx.Error("unavailable: the node holding it is unreachable or its client is slow\n", fasthttp.StatusServiceUnavailable)
	}
}

func kick(s *engine.Server, r Remote, remote bool, ctx *fasthttp.RequestCtx, id []byte) {
	code := protocol.CloseKicked
	args := ctx.QueryArgs()
	if v := args.Peek("code"); len(v) > 0 {
		n, err := strconv.Atoi(string(v))
		if err != nil || !(n == 1000 || n >= 3000 && n <= 4999) {
			ctx.Error("code must be 1000 or 3000-4999\n", fasthttp.StatusBadRequest)
			return
		}
		code = ws.StatusCode(n)
	}
	reason := args.Peek("reason")
	if len(reason) > protocol.MaxCloseReason || !utf8.Valid(reason) {
		ctx.Error("reason must be valid UTF-8 of at most 123 bytes\n", fasthttp.StatusBadRequest)
		return
	}
	if remote {
		answer(ctx, r.Kick(id, code, string(reason)))
		return
	}
	if s.Kick(id, code, string(reason)) != fasthttp.StatusOK {
		ctx.Error("not found\n", fasthttp.StatusNotFound)
		return
	}
	ctx.SetBody(textOK)
}

// channel serves /channel/<ch> (POST publish, GET presence) and
// /channel/<ch>/<id> (PUT subscribe, DELETE unsubscribe).
func channel(s *engine.Server, cr ChannelRemote, m *engine.Metrics, maxMessage int64, ctx *fasthttp.RequestCtx, rest []byte) {
	ch, id, member := bytes.Cut(rest, []byte{'/'})
	if !protocol.ValidChannel(ch) {
		ctx.Error("invalid channel name\n", fasthttp.StatusBadRequest)
		return
	}
	if member {
		if !protocol.ValidClientID(id) {
			ctx.Error("invalid ClientId\n", fasthttp.StatusBadRequest)
			return
		}
		var status int
		switch {
		case ctx.IsPut():
			status = chanMember(s, cr, id, string(ch), true)
		case ctx.IsDelete():
			status = chanMember(s, cr, id, string(ch), false)
		default:
			ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
			ctx.Response.Header.Set(fasthttp.HeaderAllow, "PUT, DELETE")
			return
		}
		switch status {
		case fasthttp.StatusOK:
			ctx.SetBody(textOK)
		case fasthttp.StatusNotFound:
			ctx.Error("not found\n", fasthttp.StatusNotFound)
		case fasthttp.StatusConflict:
			ctx.Error("the connection is in -max-channels channels already\n", fasthttp.StatusConflict)
		case fasthttp.StatusBadRequest:
			ctx.Error("invalid channel name\n", fasthttp.StatusBadRequest)
		default:
			ctx.Error("try again\n", fasthttp.StatusServiceUnavailable)
		}
		return
	}
	switch {
	case ctx.IsPost():
		body := ctx.PostBody()
		if int64(len(body)) > maxMessage {
			ctx.Error(errBodyTooBig.Error()+"\n", fasthttp.StatusRequestEntityTooLarge)
			return
		}
		binary := protocol.IsBinaryContentType(ctx.Request.Header.ContentType())
		if !binary && !utf8.Valid(body) {
			ctx.Error("text message is not valid UTF-8 (send application/octet-stream for binary)\n", fasthttp.StatusBadRequest)
			return
		}
		var exclude []byte
		if v := ctx.QueryArgs().Peek("exclude"); len(v) > 0 {
			if !protocol.ValidClientID(v) {
				ctx.Error("invalid exclude ClientId\n", fasthttp.StatusBadRequest)
				return
			}
			exclude = v
		}
		n := s.Publish(string(ch), body, binary, exclude)
		down := cr != nil && !cr.PublishChannel(string(ch), body, binary, exclude)
		ctx.SetStatusCode(fasthttp.StatusAccepted)
		ctx.SetContentType("application/json")
		var buf [48]byte
		b := append(buf[:0], `{"subscribers":`...)
		b = strconv.AppendInt(b, int64(n), 10)
		if down {
			b = append(b, `,"cluster":"down"`...) // the other nodes were not reached
		}
		ctx.SetBody(append(b, "}\n"...))
	case ctx.IsGet():
		limit := 1000
		if v := ctx.QueryArgs().Peek("limit"); len(v) > 0 {
			n, err := strconv.Atoi(string(v))
			if err != nil || n < 0 {
				ctx.Error("limit must be a number >= 0\n", fasthttp.StatusBadRequest)
				return
			}
			limit = n
		}
		count, ids := s.Channel(string(ch), limit)
		if cr != nil {
			n, more, err := cr.Presence(string(ch), limit)
			if err != nil {
				ctx.Error("unavailable: the other nodes could not be asked\n", fasthttp.StatusServiceUnavailable)
				return
			}
			count += n
			ids = mergeIDs(ids, more, limit)
		}
		b, _ := json.Marshal(struct {
			Subscribers int      `json:"subscribers"`
			IDs         []string `json:"ids"`
		}{count, ids})
		ctx.SetContentType("application/json")
		ctx.SetBody(append(b, '\n'))
	default:
		ctx.Error("method not allowed\n", fasthttp.StatusMethodNotAllowed)
		ctx.Response.Header.Set(fasthttp.HeaderAllow, "GET, POST")
	}
}
