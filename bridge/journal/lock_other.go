//go:build !unix

package journal

import (
	"errors"
	"os"
)

// lockDir is not implemented outside Unix: wsbridge runs on Linux.
func lockDir(dir string) (*os.File, error) {
	return nil, errors.New("journal: directory locking needs a Unix system")
}
