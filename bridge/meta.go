package bridge

import (
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.uber.org/zap"
)

// Connection metadata (DESIGN §8.5): a backend reply header
// Wsbridge-Set-Meta-<name>: <value> on a GET or POST answered 2xx stores a
// value on the connection; every later call of that connection carries
// Wsbridge-Meta-<name>: <value>. An empty value deletes the name.
//
// A connection without metadata pays nothing for it: the values live in
// a map on the connection's Loop, keyed by its sequence number, and the
// Session keeps only one bit (hasMeta) in what was padding.

// Bounds of one connection's metadata.
const (
	// MetaMaxNames is the most names a connection holds.
	MetaMaxNames = 16
	// MetaMaxBytes bounds the sum of the names' and values' lengths.
	MetaMaxBytes = 1024
)

// Header name prefixes, in canonical form.
const (
	metaSetPrefix = "Wsbridge-Set-Meta-"
	metaPrefix    = "Wsbridge-Meta-"
)

// metaKV is one name (canonical, without the prefix) and its value.
type metaKV struct{ name, value string }

// meta is one connection's metadata, in the order the names were first set.
type meta struct {
	kv    []metaKV
	bytes int
	hdrs  [][]byte // "Wsbridge-Meta-<name>" per kv, built once
}

// metaRejected counts Set-Meta headers ignored: a bad name or value, or
// past the bounds.
var metaRejected atomic.Uint64

// MetaRejected is the number of Wsbridge-Set-Meta-* headers ignored since
// start (wsbridge_meta_rejected_total).
func MetaRejected() uint64 { return metaRejected.Load() }

// metaLogEvery bounds the rejected-metadata warnings to one per loop per
// interval.
const metaLogEvery = 10 * time.Second

// isTchar reports whether b may appear in an HTTP token (RFC 9110 §5.6.2).
func isTchar(b byte) bool {
	switch {
	case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		return true
	}
	switch b {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// canonicalMetaName returns name in canonical header form (the first
// letter and each letter after '-' upper case, the rest lower case), and
// false when it is empty or holds a byte outside the token characters.
func canonicalMetaName(name []byte) (string, bool) {
	if len(name) == 0 {
		return "", false
	}
	b := make([]byte, len(name))
	up := true
	for i, c := range name {
		if !isTchar(c) {
			return "", false
		}
		switch {
		case up && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !up && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b[i] = c
		up = c == '-'
	}
	return string(b), true
}

// validMetaValue reports whether v is visible ASCII, spaces and tabs (no
// control characters, no bytes above 0x7e).
func validMetaValue(v []byte) bool {
	for _, c := range v {
		if (c < 0x20 && c != '\t') || c > 0x7e {
			return false
		}
	}
	return true
}

// hasPrefixFold reports whether s begins with the ASCII prefix p, case
// insensitively.
func hasPrefixFold(s []byte, p string) bool {
	if len(s) < len(p) {
		return false
	}
	for i := 0; i < len(p); i++ {
		a, b := s[i], p[i]
		if a|0x20 != b|0x20 {
			return false
		}
	}
	return true
}

// set applies one Set-Meta header; it reports false when it was ignored.
func (m *meta) set(name string, value []byte) bool {
	for i := range m.kv {
		if m.kv[i].name != name {
			continue
		}
		if len(value) == 0 {
			m.bytes -= len(name) + len(m.kv[i].value)
			m.kv = append(m.kv[:i], m.kv[i+1:]...)
			m.hdrs = append(m.hdrs[:i], m.hdrs[i+1:]...)
			return true
		}
		n := m.bytes - len(m.kv[i].value) + len(value)
		if n > MetaMaxBytes {
			return false
		}
		m.kv[i].value, m.bytes = string(value), n
		return true
	}
	if len(value) == 0 {
		return true // deleting a name not set
	}
	n := m.bytes + len(name) + len(value)
	if len(m.kv) >= MetaMaxNames || n > MetaMaxBytes {
		return false
	}
	m.kv = append(m.kv, metaKV{name, string(value)})
	m.hdrs = append(m.hdrs, []byte(metaPrefix+name))
	m.bytes = n
	return true
}

// applyMeta takes the Set-Meta headers of a 2xx reply to one of s's calls.
// It costs a scan of the reply's header names when there are none.
func (s *Session) applyMeta(l *Loop, resp *fasthttp.Response) {
	var m *meta
	for k, v := range resp.Header.All() {
		if !hasPrefixFold(k, metaSetPrefix) {
			continue
		}
		if m == nil {
			m = l.meta[s.id]
			if m == nil {
				m = &meta{}
			}
		}
		name, ok := canonicalMetaName(k[len(metaSetPrefix):])
		if !ok || !validMetaValue(v) || !m.set(name, v) {
			metaRejected.Add(1)
			l.warnMeta(s, k, len(v))
		}
	}
	if m == nil {
		return
	}
	if len(m.kv) == 0 {
		if s.hasMeta {
			delete(l.meta, s.id)
			s.hasMeta = false
		}
		return
	}
	if !s.hasMeta {
		if l.meta == nil {
			l.meta = make(map[uint64]*meta)
		}
		l.meta[s.id] = m
		s.hasMeta = true
	}
}

// warnMeta logs an ignored Set-Meta header, at most once per metaLogEvery
// on this loop.
func (l *Loop) warnMeta(s *Session, name []byte, valueLen int) {
	now := time.Now()
	if now.Sub(l.metaLogged) < metaLogEvery {
		return
	}
	l.metaLogged = now
	l.cl.log.Warn("ignored a backend's Wsbridge-Set-Meta header (bad name or value, or past 16 names / 1 KiB per connection; further ones not logged for a while)",
		zap.String("client_id", s.ClientID()), zap.ByteString("header", name), zap.Int("value_len", valueLen))
}

// addMeta puts the connection's metadata on call, just before it is sent.
func (s *Session) addMeta(l *Loop, call *Call) {
	if !s.hasMeta {
		return
	}
	m := l.meta[s.id]
	if m == nil {
		return
	}
	for i := range m.kv {
		call.Req.Header.SetCanonical(m.hdrs[i], s2b(m.kv[i].value))
	}
}

// endMeta forgets the connection's metadata (its last call is done).
func (s *Session) endMeta(l *Loop) {
	if s.hasMeta {
		delete(l.meta, s.id)
		s.hasMeta = false
	}
}

// Meta returns a copy of the connection's metadata (nil for none), for
// the admin API. On the connection's loop only.
func (s *Session) Meta(l *Loop) map[string]string {
	if !s.hasMeta {
		return nil
	}
	m := l.meta[s.id]
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m.kv))
	for _, kv := range m.kv {
		out[kv.name] = kv.value
	}
	return out
}
