package logfile

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Files returns the existing files of the log at path, oldest first:
// path.N … path.1, then path itself.
func Files(path string) []string {
	idx := rotated(path)
	var files []string
	for _, i := range slices.Backward(idx) {
		files = append(files, numbered(path, i))
	}
	if _, err := os.Stat(path); err == nil {
		files = append(files, path)
	}
	return files
}

// rotated returns the numbers N of the existing files path.N, ascending.
// It reads the directory rather than counting up from 1 so that a gap
// (a file deleted by hand) does not hide the older files.
func rotated(path string) []int {
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil
	}
	prefix := filepath.Base(path) + "."
	var idx []int
	for _, e := range ents {
		suffix, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || e.IsDir() {
			continue
		}
		if i, ok := rotationNumber(suffix); ok {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	return idx
}

// rotationNumber parses the N of path.N: digits only, no leading zero, so
// that names like path.01 or path.+1 are not taken for rotated files.
func rotationNumber(s string) (int, bool) {
	if s == "" || s[0] == '0' || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	i, err := strconv.Atoi(s)
	return i, err == nil
}

func numbered(path string, i int) string {
	return path + "." + strconv.Itoa(i)
}
