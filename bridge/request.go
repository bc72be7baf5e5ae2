package bridge

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/wsbridge/wsbridge/protocol"
)

// Request building: what every backend call carries. Session calls these
// for the engine; the bridge's own tests and benchmarks call them directly.

// Header names sent to the backend, in canonical form.
var (
	hdrConnID    = []byte(protocol.HeaderConnectionID)
	hdrReplaces  = []byte(protocol.HeaderReplaces)
	hdrCloseCode = []byte(protocol.HeaderCloseCode)
	hdrXFF       = []byte("X-Forwarded-For")
	hdrCTText    = []byte("text/plain; charset=utf-8")
	hdrCTBinary  = ctOctetStream
	methodGET    = []byte(fasthttp.MethodGet)
	methodPOST   = []byte(fasthttp.MethodPost)
	methodDELETE = []byte(fasthttp.MethodDelete)
)

// Ids are what every call about one connection carries: the ClientId, the
// connection id and the X-Forwarded-For value.
type Ids struct {
	ClientID []byte
	ConnID   []byte
	XFF      []byte
}

func (c *Client) prepare(call *Call, m Method, method []byte, ids Ids, query []byte) {
	call.Method = m
	u := append(call.scratch[:0], c.base...)
	u = append(u, ids.ClientID...)
	if query != nil {
		u = append(u, '?')
		u = append(u, query...)
	}
	call.Req.SetRequestURIBytes(u)
	call.scratch = u
	call.Req.Header.SetMethodBytes(method)
	call.Req.Header.SetCanonical(hdrConnID, ids.ConnID)
	if len(ids.XFF) > 0 {
		call.Req.Header.SetCanonical(hdrXFF, ids.XFF)
	}
}

// PrepareGET fills call as the upgrade's GET. query is the raw query
// string or nil. Session.Upgrade adds the forwarded client headers, and
// Session.Authorize Wsbridge-Replaces.
func (c *Client) PrepareGET(call *Call, ids Ids, query []byte) {
	c.prepare(call, GET, methodGET, ids, query)
}

// PreparePOST fills call as a message's POST; Session.Message appends the
// message to call.Req's body as it arrives.
func (c *Client) PreparePOST(call *Call, ids Ids, binary bool) {
	c.prepare(call, POST, methodPOST, ids, nil)
	if binary {
		call.Req.Header.SetContentTypeBytes(hdrCTBinary)
	} else {
		call.Req.Header.SetContentTypeBytes(hdrCTText)
	}
}

// PrepareDELETE fills call as the connection's DELETE with the close code
// and reason of the close that ended it.
func (c *Client) PrepareDELETE(call *Call, ids Ids, code int, reason string) {
	c.prepare(call, DELETE, methodDELETE, ids, nil)
	n := len(call.scratch)
	call.scratch = strconv.AppendInt(call.scratch, int64(code), 10)
	call.Req.Header.SetCanonical(hdrCloseCode, call.scratch[n:])
	call.Req.Header.SetContentTypeBytes(hdrCTText)
	call.Req.SetBodyString(reason)
}
