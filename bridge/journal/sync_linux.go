package journal

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data (not its mtime) to stable storage.
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
