package sign

import (
	"errors"
	"strconv"
)

// A small parser for the RFC 8941 structured fields the signature headers
// use: Signature-Input, Signature and Content-Digest are Dictionaries.
// It reads outside bytes, so it is strict (any syntax error fails the
// whole field, RFC 8941 §4.2) and bounded (it never loops without
// consuming input, and lists grow only with input).

type sfKind uint8

const (
	sfInt sfKind = iota + 1
	sfDecimal
	sfString
	sfToken
	sfBytes
	sfBool
)

// sfValue is a bare item. s holds a string's unescaped contents, a
// token, or a byte sequence's base64 text; n an integer; b a boolean.
type sfValue struct {
	kind sfKind
	s    string
	n    int64
	b    bool
}

type sfParam struct {
	key string
	v   sfValue
}

type sfItem struct {
	v      sfValue
	params []sfParam
}

// sfMember is one dictionary member: an item, or an inner list when inner
// is set. params are the item's or the inner list's parameters.
type sfMember struct {
	key    string
	inner  bool
	item   sfValue
	list   []sfItem
	params []sfParam
}

var errSyntax = errors.New("structured field syntax")

type sfParser struct {
	s string
	i int
}

// parseDictionary parses a Dictionary field value (RFC 8941 §4.2.2). A
// key given twice keeps its last value, in its first place.
func parseDictionary(s string) ([]sfMember, error) {
	p := sfParser{s: s}
	p.skipSP()
	var out []sfMember
	if p.done() {
		return out, nil
	}
	for {
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		m := sfMember{key: key}
		if p.peek() == '=' {
			p.i++
			if p.peek() == '(' {
				m.inner = true
				if m.list, err = p.innerList(); err != nil {
					return nil, err
				}
			} else if m.item, err = p.bareItem(); err != nil {
				return nil, err
			}
		} else {
			m.item = sfValue{kind: sfBool, b: true}
		}
		if m.params, err = p.parameters(); err != nil {
			return nil, err
		}
		replaced := false
		for j := range out {
			if out[j].key == key {
				out[j], replaced = m, true
			}
		}
		if !replaced {
			out = append(out, m)
		}
		p.skipOWS()
		if p.done() {
			return out, nil
		}
		if p.peek() != ',' {
			return nil, errSyntax
		}
		p.i++
		p.skipOWS()
		if p.done() {
			return nil, errSyntax // trailing comma
		}
	}
}

func (p *sfParser) done() bool { return p.i >= len(p.s) }

func (p *sfParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.s[p.i]
}

func (p *sfParser) skipSP() {
	for !p.done() && p.s[p.i] == ' ' {
		p.i++
	}
}

func (p *sfParser) skipOWS() {
	for !p.done() && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

func isLCAlpha(c byte) bool { return c >= 'a' && c <= 'z' }
func isDigit(c byte) bool   { return c >= '0' && c <= '9' }
func isAlpha(c byte) bool   { return isLCAlpha(c) || c >= 'A' && c <= 'Z' }

// isTChar reports an RFC 9110 tchar.
func isTChar(c byte) bool {
	if isAlpha(c) || isDigit(c) {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

func isBase64(c byte) bool { return isAlpha(c) || isDigit(c) || c == '+' || c == '/' || c == '=' }

// key parses a key (RFC 8941 §4.2.3.3).
func (p *sfParser) key() (string, error) {
	start := p.i
	if c := p.peek(); !isLCAlpha(c) && c != '*' {
		return "", errSyntax
	}
	for !p.done() {
		c := p.s[p.i]
		if !isLCAlpha(c) && !isDigit(c) && c != '_' && c != '-' && c != '.' && c != '*' {
			break
		}
		p.i++
	}
	return p.s[start:p.i], nil
}

// innerList parses an Inner List (RFC 8941 §4.2.1.2) without its
// parameters, which the caller reads.
func (p *sfParser) innerList() ([]sfItem, error) {
	p.i++ // '('
	list := []sfItem{}
	for {
		p.skipSP()
		if p.peek() == ')' {
			p.i++
			return list, nil
		}
		if p.done() {
			return nil, errSyntax
		}
		v, err := p.bareItem()
		if err != nil {
			return nil, err
		}
		params, err := p.parameters()
		if err != nil {
			return nil, err
		}
		list = append(list, sfItem{v: v, params: params})
		if c := p.peek(); c != ' ' && c != ')' {
			return nil, errSyntax
		}
	}
}

// parameters parses Parameters (RFC 8941 §4.2.3.2).
func (p *sfParser) parameters() ([]sfParam, error) {
	var out []sfParam
	for p.peek() == ';' {
		p.i++
		p.skipSP()
		key, err := p.key()
		if err != nil {
			return nil, err
		}
		v := sfValue{kind: sfBool, b: true}
		if p.peek() == '=' {
			p.i++
			if v, err = p.bareItem(); err != nil {
				return nil, err
			}
		}
		replaced := false
		for j := range out {
			if out[j].key == key {
				out[j].v, replaced = v, true
			}
		}
		if !replaced {
			out = append(out, sfParam{key: key, v: v})
		}
	}
	return out, nil
}

// bareItem parses a Bare Item (RFC 8941 §4.2.3.1).
func (p *sfParser) bareItem() (sfValue, error) {
	c := p.peek()
	switch {
	case c == '-' || isDigit(c):
		return p.number()
	case c == '"':
		return p.str()
	case c == '*' || isAlpha(c):
		start := p.i
		for !p.done() && (isTChar(p.s[p.i]) || p.s[p.i] == ':' || p.s[p.i] == '/') {
			p.i++
		}
		return sfValue{kind: sfToken, s: p.s[start:p.i]}, nil
	case c == ':':
		p.i++
		start := p.i
		for !p.done() && isBase64(p.s[p.i]) {
			p.i++
		}
		if p.peek() != ':' {
			return sfValue{}, errSyntax
		}
		p.i++
		return sfValue{kind: sfBytes, s: p.s[start : p.i-1]}, nil
	case c == '?':
		p.i++
		switch p.peek() {
		case '0', '1':
			p.i++
			return sfValue{kind: sfBool, b: p.s[p.i-1] == '1'}, nil
		}
	}
	return sfValue{}, errSyntax
}

// number parses an Integer or a Decimal (RFC 8941 §4.2.4); a decimal's
// value is not kept, no signature parameter is one.
func (p *sfParser) number() (sfValue, error) {
	start := p.i
	if p.peek() == '-' {
		p.i++
	}
	digits, dot := 0, -1
	for !p.done() {
		c := p.s[p.i]
		if isDigit(c) {
			digits++
		} else if c == '.' && dot < 0 && digits > 0 && digits <= 12 {
			dot = digits
		} else {
			break
		}
		p.i++
	}
	if digits == 0 {
		return sfValue{}, errSyntax
	}
	if dot >= 0 {
		if frac := digits - dot; frac < 1 || frac > 3 {
			return sfValue{}, errSyntax
		}
		return sfValue{kind: sfDecimal}, nil
	}
	if digits > 15 {
		return sfValue{}, errSyntax
	}
	n, err := strconv.ParseInt(p.s[start:p.i], 10, 64)
	if err != nil {
		return sfValue{}, errSyntax
	}
	return sfValue{kind: sfInt, n: n}, nil
}

// str parses a String (RFC 8941 §4.2.5).
func (p *sfParser) str() (sfValue, error) {
	p.i++ // '"'
	var buf []byte
	start := p.i
	for !p.done() {
		c := p.s[p.i]
		switch {
		case c == '\\':
			if buf == nil {
				buf = append([]byte{}, p.s[start:p.i]...)
			}
			p.i++
			if e := p.peek(); e == '"' || e == '\\' {
				buf = append(buf, e)
				p.i++
				continue
			}
			return sfValue{}, errSyntax
		case c == '"':
			p.i++
			if buf == nil {
				return sfValue{kind: sfString, s: p.s[start : p.i-1]}, nil
			}
			return sfValue{kind: sfString, s: string(buf)}, nil
		case c < 0x20 || c > 0x7e:
			return sfValue{}, errSyntax
		}
		if buf != nil {
			buf = append(buf, c)
		}
		p.i++
	}
	return sfValue{}, errSyntax
}

// member returns the dictionary member with key, if any.
func member(d []sfMember, key string) (sfMember, bool) {
	for _, m := range d {
		if m.key == key {
			return m, true
		}
	}
	return sfMember{}, false
}
