package cluster

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/gobwas/ws"
	"github.com/nats-io/nats.go"

	"github.com/wsbridge/wsbridge/engine"
)

func jsonInfo(info engine.Info) ([]byte, error) { return json.Marshal(info) }

// Push sends a push to the node holding id: 200, 404 (no node holds it),
// 503 (slow consumer there, the bus down or no answer in time).
func (b *Bus) Push(id, payload []byte, binary bool) int {
	h := nats.Header{}
	h.Set(hOp, opPush)
	if binary {
		h.Set(hBinary, "1")
	}
	st, _, err := b.call(opPush, string(id), h, payload)
	if err != nil {
		return http.StatusServiceUnavailable
	}
	return st
}

// Kick closes id's connection on the node holding it: 200, 404 or 503.
func (b *Bus) Kick(id []byte, code ws.StatusCode, reason string) int {
	h := nats.Header{}
	h.Set(hOp, opKick)
	h.Set(hCode, strconv.Itoa(int(code)))
	if reason != "" {
		h.Set(hReason, reason)
	}
	st, _, err := b.call(opKick, string(id), h, nil)
	if err != nil {
		return http.StatusServiceUnavailable
	}
	return st
}

// Lookup returns the info JSON of id's connection from the node holding it
// (with "node"): 200, 404 or 503.
func (b *Bus) Lookup(id []byte) ([]byte, int) {
	h := nats.Header{}
	h.Set(hOp, opInfo)
	st, body, err := b.call(opInfo, string(id), h, nil)
	if err != nil {
		return nil, http.StatusServiceUnavailable
	}
	return body, st
}
