package engine

import (
	"hash/maphash"
	"sync"
)

// registry maps each ClientId to its slot and serialises the ClientId's
// lifecycles at the backend (docs/protocol.md, "Lifecycles"): GET, POST…, DELETE, then the next
// connection's GET. The one overlap allowed is a challenger: a newcomer
// whose GET (with Wsbridge-Replaces) is sent while the owner is still open.
//
// Methods are called from event loops; actions for other connections are
// posted to their loops as tasks. A shard lock is held only for map and
// slot updates and the posts, never across I/O.
type registry struct {
	seed   maphash.Seed
	shards [64]regShard
}

type regShard struct {
	mu sync.Mutex
	m  map[string]*slot
}

// slot is one ClientId's lifecycle state.
type slot struct {
	// owner holds the ClientId at the backend, from its GET until its
	// DELETE is answered (or its GET refused).
	owner *conn
	// challenger's GET replaces an open owner.
	challenger *conn
	// waiters hold their GET until the slot frees, in arrival order; nil
	// when none, which is nearly always (a slot is one per open connection,
	// so it is kept to the 32-byte size class).
	waiters       *[]*conn
	ownerOpen     bool // owner's GET said ok
	ownerEnding   bool // owner is closing; its DELETE is owed
	challengerOK  bool // challenger's GET said ok
	ownerClaiming bool // owner's GET said ok; it claims the ClientId from the other nodes (cluster.go)
}

func newRegistry() *registry {
	r := &registry{seed: maphash.MakeSeed()}
	for i := range r.shards {
		r.shards[i].m = make(map[string]*slot)
	}
	return r
}

func (r *registry) shard(id string) *regShard {
	return &r.shards[maphash.String(r.seed, id)&(uint64(len(r.shards))-1)]
}

// MaxWaitersPerClientID is how many upgrades may wait for one ClientId
// behind the connection that holds it at the backend (and the one
// challenging it); more are refused at once (429). A legitimate client
// reconnects once while its previous connection closes; without the bound,
// upgrades for one ClientId whose owner's GET is slow would each hold a
// place in -max-pending-upgrades for up to -backend-timeout and lock every
// other client out of the node.
const MaxWaitersPerClientID = 8

// arrive registers c, whose request was just parsed. It reports whether c
// may send its GET now and, if so, the id of the open connection it would
// replace (0 for none). Otherwise c is held until a taskGrant, unless
// MaxWaitersPerClientID already wait: then full is true and c is not
// registered.
func (r *registry) arrive(c *conn) (granted bool, replaces uint64, full bool) {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	if s == nil {
		s = &slot{}
		sh.m[id] = s
	}
	switch {
	case s.owner == nil:
		s.owner = c
		return true, 0, false
	case s.ownerOpen && !s.ownerEnding && s.challenger == nil:
		s.challenger = c
		return true, s.owner.sess.ID(), false
	}
	if s.waiters == nil {
		s.waiters = new([]*conn)
	} else if len(*s.waiters) >= MaxWaitersPerClientID {
		return false, 0, true
	}
	*s.waiters = append(*s.waiters, c)
	return false, 0, false
}

// role is what an accepted GET makes of its connection.
type role uint8

const (
	roleOwner    role = iota // open now
	roleTakeover             // wait for taskOpen: the replaced owner is being closed
	roleClaim                // wait for taskClaimed: the other nodes give the ClientId up (cluster.go)
)

// accepted records that c's GET said ok.
func (r *registry) accepted(c *conn) role {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	if s.owner == c {
		s.ownerOpen = true
		r.grantChallenger(s)
		return roleOwner
	}
	// c is the challenger.
	s.challengerOK = true
	if !s.ownerEnding {
		s.owner.l.post(task{kind: taskReplace, c: s.owner})
	}
	return roleTakeover
}

// refused records that c's GET did not say ok (or was never sent): c gives
// up its place.
func (r *registry) refused(c *conn) {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	switch c {
	case s.owner:
		s.owner, s.ownerOpen, s.ownerEnding = nil, false, false
		// A challenger whose owner vanished becomes the owner.
		if ch := s.challenger; ch != nil {
			s.challenger = nil
			r.promoteChallenger(s, ch)
		}
		r.promote(s)
	case s.challenger:
		s.challenger, s.challengerOK = nil, false
		r.grantChallenger(s)
	}
	r.gc(sh, id, s)
}

// ending records that c, an accepted connection, is closing: a newcomer
// must now wait for its DELETE.
func (r *registry) ending(c *conn) {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	if s := sh.m[id]; s != nil && s.owner == c {
		s.ownerEnding = true
	}
	sh.mu.Unlock()
}

// deleted records that c's DELETE was answered: the slot passes on.
func (r *registry) deleted(c *conn) {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	if s == nil || s.owner != c {
		return
	}
	s.owner, s.ownerOpen, s.ownerEnding = nil, false, false
	if ch := s.challenger; ch != nil {
		s.challenger = nil
		r.promoteChallenger(s, ch)
	}
	r.promote(s)
	r.gc(sh, id, s)
}

// orphan registers c, which stands for connections a previous process left
// open with its ClientId (the -journal's orphans), as the owner whose
// DELETE is owed: a newcomer waits for it as for a closing owner's, until
// deleted(c). Called before the listener is up.
func (r *registry) orphan(c *conn) {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m[id] == nil {
		sh.m[id] = &slot{owner: c, ownerEnding: true}
	}
}

// promoteChallenger makes ch the owner; if its GET already said ok it is
// told to open.
func (r *registry) promoteChallenger(s *slot, ch *conn) {
	s.owner = ch
	if s.challengerOK {
		s.ownerOpen = true
		ch.l.post(task{kind: taskOpen, c: ch})
	}
	s.challengerOK = false
}

// leave removes a held connection that gave up (timeout or TCP gone). It
// reports false when c was already granted: a taskGrant is on its way and
// c must answer it instead.
func (r *registry) leave(c *conn) bool {
	id := c.clientID()
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	s := sh.m[id]
	if s == nil || s.waiters == nil {
		return false
	}
	for i, w := range *s.waiters {
		if w == c {
			s.setWaiters(append((*s.waiters)[:i], (*s.waiters)[i+1:]...))
			r.gc(sh, id, s)
			return true
		}
	}
	return false
}

// promote hands a free slot to the first waiter, then lets the next
// waiter challenge if the new owner is open.
func (r *registry) promote(s *slot) {
	if s.owner == nil && s.waiters != nil {
		w := s.popWaiter()
		s.owner = w
		w.l.post(task{kind: taskGrant, c: w})
	}
	r.grantChallenger(s)
}

func (r *registry) grantChallenger(s *slot) {
	if s.owner != nil && s.ownerOpen && !s.ownerEnding && s.challenger == nil && s.waiters != nil {
		w := s.popWaiter()
		s.challenger = w
		w.l.post(task{kind: taskGrant, c: w, replaces: s.owner.sess.ID()})
	}
}

// popWaiter takes the first waiter; s.waiters must not be nil.
func (s *slot) popWaiter() *conn {
	ws := *s.waiters
	w := ws[0]
	ws[0] = nil
	s.setWaiters(ws[1:])
	return w
}

// setWaiters stores ws, or nil when it is empty.
func (s *slot) setWaiters(ws []*conn) {
	if len(ws) == 0 {
		s.waiters = nil
		return
	}
	*s.waiters = ws
}

func (r *registry) gc(sh *regShard, id string, s *slot) {
	if s.owner == nil && s.challenger == nil && s.waiters == nil {
		delete(sh.m, id)
	}
}

// lookup returns the open connection that holds id, or nil. It does not
// allocate: pushes call it for every message.
func (r *registry) lookup(id []byte) *conn {
	sh := &r.shards[maphash.Bytes(r.seed, id)&(uint64(len(r.shards))-1)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if s := sh.m[string(id)]; s != nil && s.ownerOpen && !s.ownerEnding {
		return s.owner
	}
	return nil
}
