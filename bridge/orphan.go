package bridge

import (
	"math"

	"github.com/wsbridge/wsbridge/protocol"
)

// OrphanSeq is the Wsbridge-Seq of an orphan's DELETE (SubmitOrphanDelete):
// the process that numbered the lost connection's calls is gone, so its
// last number is unknown; the highest number there is stays above it, and
// says "the last call of this connection" to a verifier that checks order.
const OrphanSeq = math.MaxUint32

// SubmitOrphanDelete sends the DELETE of a connection a previous process
// left open (found in its -journal after a crash): ids are the lost
// connection's (its ClientId, Wsbridge-Connection-Id and X-Forwarded-For),
// Wsbridge-Close-Code is 1006 and the body empty. It is retried like any
// DELETE; o gets the Call back and must ReleaseCall it. Safe from any
// goroutine.
func (c *Client) SubmitOrphanDelete(o Completer, ids Ids) {
	call := AcquireCall()
	call.Owner = o
	call.seq = OrphanSeq
	c.PrepareDELETE(call, ids, int(protocol.CloseGone), "")
	c.Submit(call)
}

// DeleteAnswered reports whether a finished DELETE (its outcome and
// status) was answered by the backend for good: a 2xx, or a 4xx its
// retries did not change (the backend read it and said no; asking again
// would not help). A 5xx, a timeout or no answer at all is not: the DELETE
// may not have been acted on.
func DeleteAnswered(o Outcome, status int) bool {
	return o == OutcomeOK || o == OutcomeError && status >= 400 && status < 500
}
