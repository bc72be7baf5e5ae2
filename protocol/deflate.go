package protocol

// permessage-deflate (RFC 7692) negotiation: which offers the bridge takes.
//
// The bridge keeps no compression state between messages on either side, so
// it accepts an offer only on terms that let it inflate each client message
// on its own and compress each of its own messages on its own:
//
//   - server_no_context_takeover is always in the answer (our side resets);
//   - client_no_context_takeover is always in the answer, offered or not
//     (RFC 7692 §7.1.1.1: a server may include it, and a client that offers
//     the extension must honour it), so we never need the client's context;
//   - server_max_window_bits, when offered, must be 15: our compressor uses
//     the full 32 KiB window and cannot promise a smaller one, so a smaller
//     value declines that offer (a later offer may still be taken);
//   - client_max_window_bits, with no value or 8..15, is accepted and not
//     answered: our inflater reads any window up to 32 KiB.
//
// Anything else in an offer (an unknown or repeated parameter, a value where
// none is allowed, a bad number, broken syntax) declines that offer, never
// the upgrade.

// DeflateResponse is the Sec-WebSocket-Extensions value the bridge answers
// an accepted permessage-deflate offer with.
const DeflateResponse = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

// AcceptsDeflate reports whether the Sec-WebSocket-Extensions value v (one
// header line, a comma-separated list of offers) holds a permessage-deflate
// offer the bridge can take (see DeflateResponse). A line that is not valid
// extension syntax is declined as a whole. It does not allocate.
func AcceptsDeflate(v []byte) bool {
	p := extParser{s: v}
	ok := false
	for {
		p.ows()
		if p.done() {
			return ok
		}
		name, good := p.token()
		if !good {
			return false
		}
		offer := deflateOffer{}
		take := equalFold(name, "permessage-deflate")
		for {
			p.ows()
			if p.done() || p.peek() == ',' {
				break
			}
			if p.peek() != ';' {
				return false
			}
			p.i++
			p.ows()
			pname, good := p.token()
			if !good {
				return false
			}
			p.ows()
			var val []byte
			hasVal := false
			if !p.done() && p.peek() == '=' {
				p.i++
				p.ows()
				if val, good = p.value(); !good {
					return false
				}
				hasVal = true
			}
			if take && !offer.param(pname, val, hasVal) {
				take = false // declined; still parse the rest of the line
			}
		}
		if take {
			ok = true
		}
		if !p.done() {
			p.i++ // the comma
			p.ows()
			if p.done() {
				return false // a trailing comma
			}
		}
	}
}

// deflateOffer tracks the parameters seen in one offer.
type deflateOffer struct {
	seen uint8
}

const (
	seenServerNCT uint8 = 1 << iota
	seenClientNCT
	seenServerBits
	seenClientBits
)

// param takes one parameter of a permessage-deflate offer and reports whether
// the offer is still acceptable.
func (o *deflateOffer) param(name, val []byte, hasVal bool) bool {
	var bit uint8
	switch {
	case equalFold(name, "server_no_context_takeover"):
		bit = seenServerNCT
		if hasVal {
			return false
		}
	case equalFold(name, "client_no_context_takeover"):
		bit = seenClientNCT
		if hasVal {
			return false
		}
	case equalFold(name, "server_max_window_bits"):
		bit = seenServerBits
		// Required value; only the full window is something we can honour.
		if !hasVal || windowBits(val) != 15 {
			return false
		}
	case equalFold(name, "client_max_window_bits"):
		bit = seenClientBits
		if hasVal && windowBits(val) == 0 {
			return false
		}
	default:
		return false
	}
	if o.seen&bit != 0 {
		return false // repeated
	}
	o.seen |= bit
	return true
}

// windowBits returns the value of a *_max_window_bits parameter, 8..15, or 0
// when it is not one (RFC 7692 §7.1.2: 1*DIGIT with no leading zero).
func windowBits(v []byte) int {
	switch len(v) {
	case 1:
		if v[0] >= '8' && v[0] <= '9' {
			return int(v[0] - '0')
		}
	case 2:
		if v[0] == '1' && v[1] >= '0' && v[1] <= '5' {
			return 10 + int(v[1]-'0')
		}
	}
	return 0
}

// extParser scans a Sec-WebSocket-Extensions value (RFC 6455 §9.1).
type extParser struct {
	s []byte
	i int
}

func (p *extParser) done() bool { return p.i >= len(p.s) }
func (p *extParser) peek() byte { return p.s[p.i] }

func (p *extParser) ows() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func (p *extParser) token() ([]byte, bool) {
	start := p.i
	for p.i < len(p.s) && isTchar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i], p.i > start
}

// value reads a parameter value: a token, or a quoted-string whose content
// (without escapes, which a token cannot need) must itself be a token (RFC
// 6455 §9.1). It returns the token, unquoted.
func (p *extParser) value() ([]byte, bool) {
	if p.done() || p.peek() != '"' {
		return p.token()
	}
	p.i++
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != '"' {
		if !isTchar(p.s[p.i]) {
			return nil, false // a backslash escape or a non-token byte
		}
		p.i++
	}
	if p.done() || p.i == start {
		return nil, false
	}
	v := p.s[start:p.i]
	p.i++ // closing quote
	return v, true
}
