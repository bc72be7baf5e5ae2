// Package protocol is the wire layer of wsbridge: RFC 6455 WebSocket frames
// and the HTTP/1.1 upgrade handshake, on top of github.com/gobwas/ws.
//
// The package does no I/O and knows nothing about event loops or the
// backend. It works on caller buffers: its hot paths (Decoder.Next,
// ParseRequest and the Append functions) do not allocate, and every []byte
// they return aliases the input, valid only as long as the caller keeps that
// input intact. Each doc comment says which buffer a result aliases.
//
// # Frames
//
// A Decoder turns the bytes a client sent into events, one per call to
// Next. Partial frames are normal: a data frame's payload comes out in
// chunks as it arrives (EventData, with First and Fin marking the message
// boundaries across fragments), so a connection only ever keeps at most a
// partial 14-byte header unconsumed, and control frames (EventPing,
// EventPong, EventClose) come out whole. Payloads are unmasked in place.
// Every protocol violation is one of the *CloseError sentinels, which
// carries the RFC 6455 status code to close the connection with: 1002
// protocol error, 1007 invalid UTF-8 (text is checked incrementally, so a
// bad message fails before its last fragment), 1009 message too big
// (checked from the frame header, before the payload is read).
//
// A typical read loop on an event loop:
//
//	buf := conn.Peek()
//	for {
//		ev, n, err := d.Next(buf)
//		if err != nil {
//			// close with err.(*protocol.CloseError).Code
//		}
//		buf = buf[n:]
//		conn.Discard(n) // after ev's slices are used or copied
//		if ev.Kind == protocol.EventNone {
//			break // wait for more bytes
//		}
//		// handle ev
//	}
//
// permessage-deflate (RFC 7692): with Decoder.Deflate set, RSV1 on the
// first frame of a data message marks it compressed (Event.Compressed; the
// caller inflates the whole message and checks its UTF-8); RSV1 anywhere
// else is 1002. AcceptsDeflate tells which Sec-WebSocket-Extensions offers
// the bridge takes (Request.Deflate), AppendSwitchingDeflate answers one.
//
// Server frames are written with AppendFrame, AppendFrameHeader and
// AppendClose; AppendClientFrame writes masked client frames for tests and
// the load generator.
//
// # Handshake
//
// ParseRequest parses and validates an upgrade request head (GET
// /<ClientId>[?query] HTTP/1.1) into a Request whose fields alias the input,
// keeping an allow-list of headers to pass on to the backend. A refusal is
// one of the *HTTPError sentinels, which carries the HTTP status to answer
// with; AppendRefusal writes that response, AppendSwitching the 101 that
// accepts the upgrade, and AppendResponse any other response.
//
// # PROXY protocol
//
// ParseProxy reads the PROXY protocol header (HAProxy's proxy-protocol.txt,
// version 1 text and version 2 binary) that a TCP balancer puts before a
// client's first byte, incrementally and bounded, into a ProxyHeader of
// plain values; HasProxySignature tells a header from a request for a
// server that does not trust its peer.
package protocol
