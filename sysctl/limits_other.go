//go:build !linux

package sysctl

import (
	"errors"
	"fmt"
	"runtime"
)

// RaiseNoFile is supported only on Linux. wsbridge's production target is Linux, and Go
// raises the soft limit at start on other Unix systems anyway. It returns an error that
// wraps [errors.ErrUnsupported].
func RaiseNoFile() (soft, hard uint64, err error) {
	return 0, 0, fmt.Errorf("sysctl: RaiseNoFile on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

// Check returns no warnings outside Linux: there is no /proc/sys to read.
func Check(conns int) []string { return []string{} }
