package bridge

import (
	"net"

	"github.com/valyala/fasthttp"
)

// Demo is the built-in demo backend (-demo): the smallest API that speaks
// the protocol. It accepts every ClientId, echoes every message back with
// its content type and acknowledges every DELETE.
func Demo() *fasthttp.Server {
	return &fasthttp.Server{
		Name: "wsbridge-demo",
		Handler: func(ctx *fasthttp.RequestCtx) {
			switch {
			case ctx.IsGet():
				ctx.SetBodyString("ok")
			case ctx.IsPost():
				ctx.SetContentTypeBytes(ctx.Request.Header.ContentType())
				ctx.SetBody(ctx.PostBody())
			case ctx.IsDelete():
				ctx.SetBodyString("ok")
			default:
				ctx.Error("method not allowed", fasthttp.StatusMethodNotAllowed)
			}
		},
	}
}

// ServeDemo runs the demo backend on ln until ln is closed.
func ServeDemo(ln net.Listener) error { return Demo().Serve(ln) }
