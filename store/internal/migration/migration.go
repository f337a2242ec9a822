// Package migration lists a backend's embedded schema migrations. Both
// backends name their files alike, NNNN_what.sql, so that one number
// means one schema on either; how a file is applied is each backend's own.
package migration

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
)

// File is one migration.
type File struct {
	Version int    // NNNN
	Name    string // the file's base name, for messages
	Path    string // in the file system it was listed from
}

// List returns the migrations in dir of fsys, in version order. It fails
// when there are none or a name does not begin with a number.
func List(fsys fs.FS, dir string) ([]File, error) {
	names, err := fs.Glob(fsys, dir+"/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	out := make([]File, 0, len(names))
	for _, name := range names {
		base := strings.TrimPrefix(name, dir+"/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad version prefix: %w", base, err)
		}
		out = append(out, File{Version: version, Name: base, Path: name})
	}
	if len(out) == 0 {
		return nil, errors.New("no migrations embedded")
	}
	return out, nil
}

// Latest is the version of the last of files, which List returned.
func Latest(files []File) int { return files[len(files)-1].Version }
