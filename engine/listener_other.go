//go:build !linux

package engine

import "errors"

type sockets struct{}

var errNotLinux = errors.New("engine: stopping the listener is only supported on Linux")

func findSockets(port, wantListeners int) (sockets, error) { return sockets{}, errNotLinux }

// stopAccepting is only implemented on Linux; elsewhere a draining server
// answers new upgrades with 503 instead.
func stopAccepting(s sockets, port int, reusePort bool) (int, error) { return 0, errNotLinux }
