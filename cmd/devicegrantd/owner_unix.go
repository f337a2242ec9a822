//go:build unix

package main

import (
	"os"
	"syscall"
)

// owner returns a file's owner uid, when the platform has one.
func owner(fi os.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}
