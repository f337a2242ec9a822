//go:build !unix

package main

import "os"

// owner returns a file's owner uid, when the platform has one.
func owner(os.FileInfo) (uint32, bool) { return 0, false }
