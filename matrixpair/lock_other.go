//go:build !unix

package matrixpair

import (
	"context"
	"errors"
)

// lockFile is not implemented outside Unix: the state would not be safe to
// share between processes.
func lockFile(ctx context.Context, dir, profile string) (func(), error) {
	return nil, errors.New("matrixpair: file locking is only implemented on Unix")
}
