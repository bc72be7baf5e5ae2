package engine

import (
	"hash/maphash"
	"net/netip"
	"strings"
	"sync"
)

// ipLimits counts, per client address, the WebSocket connections (held,
// authorising, takeover or open: what -max-conns counts) and the pending
// upgrades among them (what -max-pending-upgrades counts), for
// -max-conns-per-ip and -max-pending-per-ip. It exists only when one of
// them is set.
//
// The client's address is the one wsbridge believes (Server.limitAddr):
// the socket's peer, a trusted proxy's PROXY protocol source, or the
// rightmost X-Forwarded-For address a trusted proxy vouches for. Shared by
// all loops; a shard lock is held for one map update, never across I/O.
type ipLimits struct {
	maxConns, maxPending int32 // 0 = no limit
	seed                 maphash.Seed
	shards               [32]ipShard
}

type ipShard struct {
	mu sync.Mutex
	m  map[netip.Addr]ipCount
}

type ipCount struct{ conns, pending int32 }

// ipRefusal says which per-address limit refused an upgrade.
type ipRefusal uint8

const (
	ipOK ipRefusal = iota
	ipTooManyConns
	ipTooManyPending
)

func newIPLimits(maxConns, maxPending int) *ipLimits {
	if maxConns <= 0 && maxPending <= 0 {
		return nil
	}
	l := &ipLimits{maxConns: int32(maxConns), maxPending: int32(maxPending), seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].m = make(map[netip.Addr]ipCount)
	}
	return l
}

func (l *ipLimits) shard(a netip.Addr) *ipShard {
	b := a.As16()
	return &l.shards[maphash.Bytes(l.seed, b[:])&(uint64(len(l.shards))-1)]
}

// acquire counts one more connection, pending, for a unless a limit is
// reached.
func (l *ipLimits) acquire(a netip.Addr) ipRefusal {
	sh := l.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n := sh.m[a]
	switch {
	case l.maxConns > 0 && n.conns >= l.maxConns:
		return ipTooManyConns
	case l.maxPending > 0 && n.pending >= l.maxPending:
		return ipTooManyPending
	}
	n.conns++
	n.pending++
	sh.m[a] = n
	return ipOK
}

// release uncounts a connection (conn) and/or its pending upgrade
// (pending).
func (l *ipLimits) release(a netip.Addr, conn, pending bool) {
	sh := l.shard(a)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	n, ok := sh.m[a]
	if !ok {
		return
	}
	if conn {
		n.conns--
	}
	if pending {
		n.pending--
	}
	if n.conns <= 0 && n.pending <= 0 {
		delete(sh.m, a)
		return
	}
	sh.m[a] = n
}

// limitAddr is the client address the per-address limits count, derived
// from the X-Forwarded-For value sent to the backend (conn.xff), which
// ends with the address wsbridge took the client for: the rightmost
// address that is not a trusted proxy. It depends only on xff and the
// configuration, so a connection's acquire and release agree. An address
// a trusted proxy sent that does not parse counts as that proxy.
func (s *Server) limitAddr(xff string) netip.Addr {
	last := netip.Addr{}
	for len(xff) > 0 {
		i := strings.LastIndexByte(xff, ',')
		part := strings.TrimSpace(xff[i+1:])
		a, err := netip.ParseAddr(part)
		if err != nil {
			return last
		}
		a = a.Unmap().WithZone("")
		if !s.trusted(a) || i < 0 {
			return a
		}
		last, xff = a, xff[:i]
	}
	return last
}

// ipAcquire counts c against the per-address limits; c.names is set.
func (c *conn) ipAcquire() ipRefusal {
	s := c.l.srv
	if s.ipl == nil {
		return ipOK
	}
	return s.ipl.acquire(s.limitAddr(c.xff()))
}

// ipRelease uncounts c's connection and/or pending upgrade.
func (c *conn) ipRelease(conn, pending bool) {
	if s := c.l.srv; s.ipl != nil {
		s.ipl.release(s.limitAddr(c.xff()), conn, pending)
	}
}

// peerIP is the IP of an ip:port, as netip prints it.
func peerIP(addrPort string) string {
	ap, err := netip.ParseAddrPort(addrPort)
	if err != nil {
		return ""
	}
	return ap.Addr().Unmap().String()
}
