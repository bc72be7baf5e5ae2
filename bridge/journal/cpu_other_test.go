//go:build !unix

package journal

import (
	"testing"
	"time"
)

// cpuTime is not measured outside Unix.
func cpuTime(*testing.B) time.Duration { return 0 }
