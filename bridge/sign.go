package bridge

import (
	"time"

	"github.com/wsbridge/wsbridge/bridge/sign"
)

// Signed calls (-sign-key, package sign).
//
// The Session numbers a connection's calls on its event loop (Call.seq: 1
// for the GET, then each POST as its message arrives whole, then the
// DELETE); the worker signs a call just before writing it, so created is
// the time it goes out and a DELETE tried again is signed again with the
// same seq and a new created. Without a Signer nothing is added, not even
// Wsbridge-Seq: an unsigned number proves nothing to a backend, and the
// calls stay as they were byte for byte. The OPTIONS probe (probe.go)
// belongs to no connection and is not signed.

var (
	hdrSeq            = []byte(sign.HeaderSeq)
	hdrContentDigest  = []byte(sign.HeaderContentDigest)
	hdrSignatureInput = []byte(sign.HeaderSignatureInput)
	hdrSignature      = []byte(sign.HeaderSignature)
)

// sign adds Wsbridge-Seq, Content-Digest, Signature-Input and Signature to
// call's request, over the path, query, body and Wsbridge-Connection-Id it
// will be written with (with DisablePathNormalizing the request line
// carries PathOriginal and the raw query as they are). It runs on the
// worker and does not allocate once call.sig has grown.
func (c *Client) sign(call *Call) {
	uri := call.Req.URI()
	m := sign.Message{
		Method:       call.Method.String(),
		Path:         uri.PathOriginal(),
		Query:        uri.QueryString(),
		Body:         call.Req.Body(),
		ConnectionID: call.Req.Header.PeekBytes(hdrConnID),
		Seq:          uint64(call.seq),
		Created:      time.Now().Unix(),
	}
	var v sign.Signed
	call.sig, v = c.cfg.Signer.Append(call.sig[:0], &m)
	h := &call.Req.Header
	h.SetCanonical(hdrSeq, v.Seq)
	h.SetCanonical(hdrContentDigest, v.ContentDigest)
	h.SetCanonical(hdrSignatureInput, v.SignatureInput)
	h.SetCanonical(hdrSignature, v.Signature)
}
