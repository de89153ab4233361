package artifact

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
)

// maxReadFile bounds ReadFiles: the files it is for (ferry.yaml, Procfile,
// meta.json) are small, and an artifact must not make the reader allocate
// whatever a header claims.
const maxReadFile = 1 << 20

// ReadFiles returns the contents of the named regular files of an artifact
// (compressed tar), reading only as far as it must. Names missing from the
// archive are missing from the map.
func ReadFiles(r io.Reader, names ...string) (map[string][]byte, error) {
	dr, err := Decompress(r)
	if err != nil {
		return nil, fmt.Errorf("read artifact: %w", err)
	}
	defer dr.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	got := map[string][]byte{}
	tr := tar.NewReader(dr)
	for len(got) < len(want) {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read artifact: %w", err)
		}
		name := path.Clean(h.Name)
		if !want[name] || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > maxReadFile {
			return nil, fmt.Errorf("read artifact: %s is %d bytes, more than %d", name, h.Size, maxReadFile)
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxReadFile))
		if err != nil {
			return nil, fmt.Errorf("read artifact: %s: %w", name, err)
		}
		got[name] = b
	}
	return got, nil
}
