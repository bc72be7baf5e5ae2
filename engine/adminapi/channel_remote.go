package adminapi

import (
	"slices"

	"github.com/wsbridge/wsbridge/engine"
)

// ChannelRemote is the cluster's side of the /channel calls
// (engine/cluster.Bus); a Config.Remote that implements it carries channels
// across the nodes (docs/protocol.md, "Channels" and "Cluster").
type ChannelRemote interface {
	// PublishChannel sends a message, already published on this node, to
	// the other nodes; false when the bus is down (they are not reached).
	PublishChannel(ch string, payload []byte, binary bool, exclude []byte) bool
	// Member subscribes (join) or unsubscribes a ClientId held by another
	// node: 200, 400, 404 (connected nowhere), 409 or 503 (bus down).
	Member(id []byte, ch string, join bool) int
	// Presence is the other nodes' subscriber count of ch and up to limit
	// of their ClientIds; err when they could not be asked.
	Presence(ch string, limit int) (count int, ids []string, err error)
}

// channelRemote is r as a ChannelRemote, or nil.
func channelRemote(r Remote) ChannelRemote {
	cr, _ := r.(ChannelRemote)
	return cr
}

// chanMember subscribes or unsubscribes id, here or on the node holding it.
func chanMember(s *engine.Server, cr ChannelRemote, id []byte, ch string, join bool) int {
	if cr != nil && !s.Holds(id) {
		return cr.Member(id, ch, join)
	}
	if join {
		return s.Subscribe(id, ch)
	}
	return s.Unsubscribe(id, ch)
}

// mergeIDs joins two sorted id lists and keeps the first limit.
func mergeIDs(a, b []string, limit int) []string {
	ids := append(a, b...)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > limit {
		ids = ids[:max(limit, 0)]
	}
	return ids
}
