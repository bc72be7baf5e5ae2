package sysctl

// DefaultNoFile is the open-file limit that [Check] expects when it is not given a connection
// count. It is enough for a small deployment and well above the usual soft default of 1024.
const DefaultNoFile = 10000

// Sizing rules. They match sysctl/tune and the comments in sysctl/99-wsbridge.conf, and
// tune_test.go checks the two against each other.
const (
	// fdSlack covers backend connections (-backend-max-conns, 1024 by default), listeners,
	// epoll descriptors and log files.
	fdSlack = 2048
	// minBacklog and maxBacklog bound the accept-queue size that tune recommends: at least
	// the modern kernel default, at most what older kernels store (a u16).
	minBacklog = 4096
	maxBacklog = 65535
	// recommendedPorts is the width of the range tune sets, 10240-65535.
	recommendedPorts = 65535 - 10240 + 1
)

// fdsFor is the number of file descriptors n connections need: one per client, 10% for
// connections that are closing, and fdSlack.
func fdsFor(n uint64) uint64 { return n + n/10 + fdSlack }

// backlogFor is the accept backlog sysctl/tune recommends for n connections: n/8 rounded
// up to a power of two, kept between minBacklog and maxBacklog.
func backlogFor(n uint64) uint64 {
	b := uint64(1)
	for b < n/8 {
		b *= 2
	}
	return max(minBacklog, min(b, maxBacklog))
}
