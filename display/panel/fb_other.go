//go:build !linux

package panel

import (
	"errors"
	"os"
)

// ReadFBGeometry is only available on Linux.
func ReadFBGeometry(f *os.File) (FBGeometry, error) {
	return FBGeometry{}, errors.New("panel: framebuffers need Linux")
}

// OpenFB is only available on Linux.
func OpenFB(path string) (*FB, error) {
	return nil, errors.New("panel: framebuffers need Linux")
}
