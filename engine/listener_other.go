//go:build !linux

package engine

import "errors"

// stopAccepting is only implemented on Linux; elsewhere a draining server
// answers new upgrades with 503 instead.
func stopAccepting(port int, reusePort bool) (int, error) {
	return 0, errors.New("engine: stopping the listener is only supported on Linux")
}
