package bridge

// SetReplaces names, on a held GET, the open connection it would replace
// on another node of a cluster (Wsbridge-Replaces: that node's connection
// id, as its info gives it). Authorize with replaces 0 keeps it.
func (h *Held) SetReplaces(connID string) {
	if h.call != nil && connID != "" {
		h.call.Req.Header.SetCanonical(hdrReplaces, []byte(connID))
	}
}
