package engine

import (
	"sync"
	"time"
)

// Bus is what the engine needs of a cluster (engine/cluster implements it
// over NATS); Config.Bus is nil on a node alone. Its methods are called
// from event loops and must not block.
type Bus interface {
	// Hold says that a connection of id whose GET the backend accepted
	// lives here from now until the matching Drop: the node answers for
	// id on the bus. stamp (unix nanoseconds of the acceptance) orders
	// two claims of one ClientId on two nodes.
	Hold(id string, stamp int64)
	// Drop ends one Hold. It is called before the other nodes waiting
	// for id (Release) are answered, on the same bus connection.
	Drop(id string)
	// Claim asks every other node to give id up (Server.Release there)
	// and calls done once, from any goroutine: won is false when another
	// node's newer claim wins; the bus unreachable counts as won (the
	// node goes on alone).
	Claim(id string, stamp int64, done func(won bool))
	// Who asks the other nodes for the connection id of id's open
	// connection there, for the GET's Wsbridge-Replaces; done("") when
	// none (or the bus is down). done is called once, from any goroutine.
	Who(id string, done func(connID string))
}

// clusterState is the engine's side of the bus: who waits for a ClientId
// to be given up here.
type clusterState struct {
	bus Bus
	mu  sync.Mutex
	rel map[string][]func(bool) // Release callers waiting for the slot to hold no accepted connection
}

// refReplacedElsewhere answers a newcomer whose GET was accepted but whose
// claim lost to a newer connection of its ClientId on another node.
var refReplacedElsewhere = refusal{rrClientIDBusy, 409, "replaced by a newer connection\n"}

// acceptedClaim is registry.accepted with a bus: an owner that opens a
// ClientId does not open yet but claims it from the other nodes first
// (roleClaim); until the claim ends it is neither open (lookup, pushes)
// nor replaceable (newcomers on this node wait behind it).
func (r *registry) acceptedClaim(c *conn) role {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	s := sh.m[id]
	if s.owner == c {
		s.ownerClaiming = true
		sh.mu.Unlock()
		return roleClaim
	}
	sh.mu.Unlock()
	return r.accepted(c)
}

// claimed ends c's claim: won, c is the open owner now.
func (r *registry) claimed(c *conn, won bool) {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	if s == nil || s.owner != c || !s.ownerClaiming {
		return
	}
	s.ownerClaiming = false
	if won {
		s.ownerOpen = true
		r.grantChallenger(s)
	}
}

// accepted reports whether the slot holds a connection whose GET was
// accepted (a DELETE is owed). Under the shard lock.
func (s *slot) holdsAccepted() bool {
	return s.owner != nil && (s.ownerOpen || s.ownerEnding || s.ownerClaiming) || s.challengerOK
}

// claimGET runs for an accepted GET on a node with a bus: hold the id on
// the bus, and, for an owner, claim it before the 101.
func (c *conn) claimGET() role {
	s := c.l.srv
	id := c.clientID()
	stamp := time.Now().UnixNano()
	s.cl.bus.Hold(id, stamp)
	ro := s.reg.acceptedClaim(c)
	if ro == roleClaim {
		l := c.l
		s.cl.bus.Claim(id, stamp, func(won bool) {
			var w uint64
			if won {
				w = 1
			}
			l.post(task{kind: taskClaimed, c: c, replaces: w})
		})
	}
	return ro
}

// askHolder holds c's GET until the other nodes say which connection, if
// any, it would replace there (Wsbridge-Replaces): c stays held, without a
// timer (the bus bounds the question), then goes on as granted.
func (c *conn) askHolder() {
	c.more |= fMoreAsked
	l := c.l
	l.srv.cl.bus.Who(c.clientID(), func(connID string) {
		l.post(task{kind: taskHolder, c: c, holder: connID})
	})
}

// onHolder runs with the other nodes' answer: the GET goes (onGrant).
func (c *conn) onHolder(connID string) {
	if c.side != nil && c.phase == phHeld {
		c.side.get.SetReplaces(connID)
	}
	c.onGrant(0)
}

// onClaimed ends the claim of c (phTakeover): open, or give up.
func (c *conn) onClaimed(won bool) {
	if c.phase != phTakeover {
		return
	}
	c.l.srv.reg.claimed(c, won)
	if won {
		c.open()
		return
	}
	c.loseClaim()
}

// loseClaim ends c, whose GET was accepted but which never opened: a newer
// connection of its ClientId on another node wins. Its client gets 409;
// the backend gets its DELETE (code 4000).
func (c *conn) loseClaim() {
	if c.gc != nil {
		c.refuse(refReplacedElsewhere)
	}
	c.end(crReplaced, closeCode(crReplaced), "replaced by a newer connection")
	if c.gc != nil {
		c.l.closeConn(c) // onClose ends the intake: the DELETE goes
	} else {
		c.endIntake()
	}
}

// onYield runs when another node's newer claim wins over c's.
func (c *conn) onYield() {
	switch c.phase {
	case phOpen:
		c.closeWith(crReplaced, 0, "replaced by a newer connection")
	case phTakeover:
		c.l.srv.reg.claimed(c, false)
		c.loseClaim()
	}
}

// Release gives id up for a newcomer on another node: the connection
// holding it here is closed with 4000 (or, still claiming, refused) and
// done(true) is called once no connection of id whose GET was accepted is
// left here, its DELETE answered. done(false), at once, when this node
// keeps id: a takeover on this node is under way, or this node's claim
// is the newer (theirsWins false). done may run on an event loop: it must
// not block.
func (s *Server) Release(id string, theirsWins bool, done func(yielded bool)) {
	if s.cl == nil {
		done(true)
		return
	}
	sh := s.reg.shard(id)
	sh.mu.Lock()
	sl := sh.m[id]
	if sl == nil || !sl.holdsAccepted() {
		sh.mu.Unlock()
		done(true)
		return
	}
	if sl.challengerOK || sl.ownerClaiming && !theirsWins {
		sh.mu.Unlock()
		done(false)
		return
	}
	s.cl.mu.Lock()
	s.cl.rel[id] = append(s.cl.rel[id], done)
	s.cl.mu.Unlock()
	if !sl.ownerEnding {
		sl.owner.l.post(task{kind: taskYield, c: sl.owner})
	}
	sh.mu.Unlock()
}

// released answers the Release callers of id once its slot holds no
// accepted connection; after each DELETE.
func (s *Server) released(id string) {
	sh := s.reg.shard(id)
	sh.mu.Lock()
	if sl := sh.m[id]; sl != nil && sl.holdsAccepted() {
		sh.mu.Unlock()
		return
	}
	s.cl.mu.Lock()
	dones := s.cl.rel[id]
	if dones != nil {
		delete(s.cl.rel, id)
	}
	s.cl.mu.Unlock()
	sh.mu.Unlock()
	for _, done := range dones {
		done(true)
	}
}

// Holds reports whether an open connection here holds id (a push to it
// is local).
func (s *Server) Holds(id []byte) bool { return s.reg.lookup(id) != nil }

// NodeCluster is the bus the server was configured with, or nil.
func (s *Server) Bus() Bus {
	if s.cl == nil {
		return nil
	}
	return s.cl.bus
}

func newClusterState(b Bus) *clusterState {
	if b == nil {
		return nil
	}
	return &clusterState{bus: b, rel: make(map[string][]func(bool))}
}
