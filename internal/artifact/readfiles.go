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

// errTapDone ends the writes into a FileTap whose reader has what it wants.
var errTapDone = errors.New("artifact: file tap done")

// FileTap picks named files out of an artifact as its bytes are written
// to it, for whoever must not read the artifact twice: the server takes
// meta.json and ferry.yaml from an upload while it streams into the store.
// It reads as ReadFiles does, with the same bounds; once it has the files
// (or the bytes turn out not to be an artifact) it drops what follows.
type FileTap struct {
	pw      *io.PipeWriter
	stopped bool
	done    chan struct{}
	files   map[string][]byte
	err     error
}

// NewFileTap starts a tap for names. Call Done once the bytes have been
// written, or the write failed; it ends the tap's goroutine.
func NewFileTap(names ...string) *FileTap {
	pr, pw := io.Pipe()
	t := &FileTap{pw: pw, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.files, t.err = ReadFiles(pr, names...)
		// Unblocks a write under way and turns the rest into no-ops.
		pr.CloseWithError(errTapDone)
	}()
	return t
}

// Write hands p to the reader and never fails: the bytes' way into the
// store must not depend on whether they are an artifact. It returns when
// the reader has taken p, so it is as slow as decompressing p.
func (t *FileTap) Write(p []byte) (int, error) {
	if !t.stopped {
		if _, err := t.pw.Write(p); err != nil {
			t.stopped = true
		}
	}
	return len(p), nil
}

// Done ends the input and returns what ReadFiles would have returned for
// the bytes written.
func (t *FileTap) Done() (map[string][]byte, error) {
	t.pw.Close()
	<-t.done
	return t.files, t.err
}
