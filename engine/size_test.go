package engine

import (
	"testing"
	"unsafe"
)

// TestStateSizes: what every idle open connection holds stays in its size
// class (TestIdleConnMemory measures the whole).
func TestStateSizes(t *testing.T) {
	if got, want := unsafe.Sizeof(conn{}), uintptr(208); got > want {
		t.Errorf("conn: got %d B, want <= %d (a size class of the Go allocator)", got, want)
	}
	if got, want := unsafe.Sizeof(slot{}), uintptr(32); got > want {
		t.Errorf("registry slot: got %d B, want <= %d", got, want)
	}
}
