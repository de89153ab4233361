// Package dir is the default artifact store: one file per key under a root
// directory, as `ferry server --data DIR` keeps them in DIR/artifacts.
// Blobs are written through a temp file next to their final name and
// renamed into place (fsutil), so a reader, or the server after a crash,
// finds either the whole blob or none of it.
package dir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
	"github.com/ferrydeploy/ferry/internal/store"
)

var _ store.Store = (*Store)(nil)

// chunk is how much Put copies between checks of its ctx: small enough
// that a cancelled upload stops promptly, large enough to cost nothing.
const chunk = 1 << 20

// Store keeps blobs as files under Root.
type Store struct {
	Root string
}

// New returns a Store under root, creating the directory if it is missing.
func New(root string) (*Store, error) {
	if root == "" {
		return nil, ferry.Errorf(ferry.EINVALID, "store: no directory given")
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return &Store{Root: root}, nil
}

// Put writes r's size bytes to a temp file in key's directory and renames
// it over key only once all of them are on disk.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if size < 0 {
		return ferry.Errorf(ferry.EINVALID, "store: put %s: negative size %d", key, size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("store: put %s: %w", key, err)
	}
	f, err := fsutil.Create(p, 0o644)
	if err != nil {
		return fmt.Errorf("store: put %s: %w", key, err)
	}
	defer f.Abort()
	for done := int64(0); done < size; {
		n, err := io.CopyN(f, r, min(chunk, size-done))
		done += n
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("store: put %s: reader ended after %d of %d bytes: %w", key, done, size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("store: put %s: %w", key, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("store: put %s: %w", key, err)
	}
	return nil
}

// Open returns key's file positioned at offset.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, 0, err
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, 0, s.fileError(key, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		f.Close()
		return nil, 0, s.fileError(key, err)
	}
	size := fi.Size()
	if offset < 0 || offset > size {
		f.Close()
		return nil, 0, ferry.Errorf(ferry.EINVALID, "store: open %s: offset %d outside 0..%d", key, offset, size)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("store: open %s: %w", key, err)
	}
	return f, size, nil
}

// Stat returns key's size.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	p, err := s.path(key)
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err == nil && fi.IsDir() {
		err = fs.ErrNotExist
	}
	if err != nil {
		return 0, s.fileError(key, err)
	}
	return fi.Size(), nil
}

// Delete removes key. Its directory stays: removing it would race with a
// Put creating a temp file there.
func (s *Store) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return s.fileError(key, fs.ErrNotExist)
	}
	if err := os.Remove(p); err != nil {
		return s.fileError(key, err)
	}
	return nil
}

// List walks only the directory the prefix names, so listing
// "artifacts/" does not read anything else under the root.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	base := ""
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		base = prefix[:i]
		if err := store.CheckKey(base); err != nil {
			return nil, ferry.Errorf(ferry.EINVALID, "store: list: prefix %q: %s", prefix, err)
		}
	}
	keys := []string{}
	err := filepath.WalkDir(filepath.Join(s.Root, filepath.FromSlash(base)), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(s.Root, p)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		// Temp files of Puts in flight start with a dot; keys never do.
		if strings.HasPrefix(d.Name(), ".") && key != "." {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.IsDir() && strings.HasPrefix(key, prefix) {
			keys = append(keys, key)
		}
		return nil
	})
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, fmt.Errorf("store: list %q: %w", prefix, err)
	}
	slices.Sort(keys)
	return keys, nil
}

// path maps key to its file, refusing keys that would leave the root.
func (s *Store) path(key string) (string, error) {
	if err := store.CheckKey(key); err != nil {
		return "", ferry.Errorf(ferry.EINVALID, "store: key %q: %s", key, err)
	}
	return filepath.Join(s.Root, filepath.FromSlash(key)), nil
}

// fileError marks a missing file, or a key whose parent is a file, as
// ENOTFOUND so callers can tell "absent" from a failing disk.
func (s *Store) fileError(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return ferry.WrapError(ferry.ENOTFOUND, err, "store: %s", key)
	}
	return fmt.Errorf("store: %s: %w", key, err)
}
