// Package sign signs wsbridge's backend calls with an RFC 9421 HTTP
// Message Signature, and verifies them.
//
// With -sign-key <keyid>=<secret>[,<keyid>=<secret>…] every backend call
// (GET, POST, DELETE) carries, besides Wsbridge-Connection-Id:
//
//	Wsbridge-Seq: 3
//	Content-Digest: sha-256=:<base64 of SHA-256(body)>:
//	Signature-Input: wsbridge=("@method" "@path" "@query" "content-digest" "wsbridge-connection-id" "wsbridge-seq");created=1618884473;keyid="k1";alg="hmac-sha256"
//	Signature: wsbridge=:<base64 of HMAC-SHA256(secret, signature base)>:
//
// The signature base is RFC 9421 §2.5's, one line per covered component
// and the parameters last, without a final newline:
//
//	"@method": POST
//	"@path": /api/alice
//	"@query": ?
//	"content-digest": sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:
//	"wsbridge-connection-id": 5be1c0a2f3d4-1a
//	"wsbridge-seq": 3
//	"@signature-params": ("@method" "@path" "@query" "content-digest" "wsbridge-connection-id" "wsbridge-seq");created=1618884473;keyid="k1";alg="hmac-sha256"
//
// # What each component gives the backend
//
//   - The HMAC with a secret only the bridge and the backend know: origin.
//     Nobody else can make a call the backend accepts.
//   - @method, @path and @query: the call cannot be turned into another
//     (a DELETE into a POST, alice's call into bob's, the upgrade's
//     query changed). @query is "?" when the call has none.
//   - content-digest (RFC 9530, SHA-256 of the body as sent): integrity of
//     the message, the close reason. The backend checks the digest
//     against the body it read and the signature over the digest.
//   - wsbridge-connection-id: the call belongs to this connection and no
//     other, so a stale DELETE cannot be passed off as a current one.
//   - wsbridge-seq: order. Per connection, calls are numbered from 1 in
//     the order the bridge issues them (the GET, then each POST in
//     arrival order, then the DELETE). A backend that remembers the
//     highest seq it has handled per connection id sees them increase;
//     a lower one is a replay or out of order. Numbers may be skipped (a
//     call the bridge dropped before sending). A DELETE the bridge retries
//     is signed again with the same seq and a new created: the one seq a
//     backend can see twice is that of a DELETE it did not answer.
//   - created (Unix seconds, the time of signing): freshness. A verifier
//     refuses a signature older than its maximum age.
//
// The keys: the first signs; every listed key is accepted by a Verifier
// built from the same value, so a key rotates in three steps — add the
// new key after the old one on the backend and the bridge, move it first
// on the bridge, drop the old one once no call signed with it can still
// arrive (the maximum age).
//
// # How a backend verifies
//
// Take the wsbridge member of Signature-Input, rebuild the signature base
// from the request as received (method; path and raw query of the
// request line; the Content-Digest, Wsbridge-Connection-Id and
// Wsbridge-Seq headers; the parameters as they appear in
// Signature-Input), compute HMAC-SHA256 with the secret named by keyid,
// compare it in constant time with the wsbridge member of Signature, then
// check Content-Digest against the body and created against the clock.
// In Go, Verifier does all of it; in PHP, examples/php/verify_signature.php.
//
// # What it does not do
//
//   - Replay within the maximum age: a captured call can be sent again
//     until it is too old. The signature makes it detectable (same
//     connection id, a seq already handled), not impossible; a backend
//     for which a repeated POST matters must remember the seq.
//   - Secrecy: the body travels in clear. Use an https backend URL.
//   - Other headers are not signed: X-Forwarded-For, Content-Type, the
//     GET's forwarded client headers, Wsbridge-Replaces, Wsbridge-Close-Code;
//     nor is the reply. The host is not either: give each backend its own
//     key. (The Verifier and the PHP verifier rebuild the base from whatever
//     Signature-Input lists, so covering more later breaks neither.)
//   - Proxies that rewrite the path or re-encode the query break the
//     signature; the backend must see the request line as the bridge sent
//     it.
//
// # Cost
//
// Signer.Append hashes the body once for the digest and the ~400-byte
// base once for the HMAC, into the caller's buffer with a pooled HMAC
// state: no allocation per call (TestAppendAllocs). BenchmarkSignerAppend
// on a 2-core EPYC VM: about 0.8 µs for an empty body, 1.6 µs for 1 KiB,
// 60–80 µs for 64 KiB (the body's SHA-256, about 1 GB/s, dominates past a
// few KiB). It belongs on the goroutine that sends the call, not on an
// event loop.
package sign
