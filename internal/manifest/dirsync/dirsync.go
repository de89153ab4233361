// Package dirsync makes a destination directory match a freshly unpacked
// source directory, as `rsync -a --delete` with excludes does for
// stretcher, but without copying: the source is consumed, its files renamed
// into place one by one (each rename atomic), so a sync costs metadata
// operations, not bytes. Excluded paths are neither copied nor deleted.
package dirsync

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ferrydeploy/ferry/internal/pathmatch"
)

// Stats counts what Sync did.
type Stats struct {
	Updated   int // files, links and dirs created or replaced
	Unchanged int // same size, mtime and mode: left alone, as rsync's quick check
	Deleted   int
}

// Sync moves the content of src into dst (created if missing), deletes what
// dst has and src lacks, and keeps paths excl matches on either side. src
// is consumed. New directories are made before any file is touched, so
// running out of space there leaves dst as it was.
func Sync(src, dst string, excl *pathmatch.Matcher) (Stats, error) {
	var st Stats
	srcRoot, err := os.Stat(src)
	if err != nil {
		return st, fmt.Errorf("sync: %w", err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return st, fmt.Errorf("sync: %w", err)
	}
	type item struct {
		rel string
		fi  fs.FileInfo
	}
	var items []item
	want := map[string]bool{}
	err = walkIncluded(src, excl, func(p, rel string, fi fs.FileInfo) error {
		items = append(items, item{rel, fi})
		want[rel] = true
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("sync: %w", err)
	}

	// Phase 1: directories, undone on failure.
	var made []string
	for _, it := range items {
		if !it.fi.IsDir() {
			continue
		}
		p := filepath.Join(dst, it.rel)
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			continue // a file or link in the way; replaced in phase 2
		}
		if err := os.Mkdir(p, 0o700); err != nil {
			for i := len(made) - 1; i >= 0; i-- {
				os.Remove(made[i])
			}
			return st, fmt.Errorf("sync: %w", err)
		}
		made = append(made, p)
	}

	// Phase 2: put every entry in place.
	for _, it := range items {
		p := filepath.Join(dst, it.rel)
		old, oerr := os.Lstat(p)
		if it.fi.IsDir() {
			if oerr == nil && !old.IsDir() {
				if err := os.Remove(p); err != nil {
					return st, fmt.Errorf("sync: %w", err)
				}
				if err := os.Mkdir(p, 0o700); err != nil {
					return st, fmt.Errorf("sync: %w", err)
				}
				st.Updated++
			}
			continue // modes and times of directories are set last
		}
		if oerr == nil && same(old, it.fi, p, filepath.Join(src, it.rel)) {
			st.Unchanged++
			continue
		}
		if oerr == nil && old.IsDir() {
			if err := os.RemoveAll(p); err != nil {
				return st, fmt.Errorf("sync: %w", err)
			}
		}
		if err := move(filepath.Join(src, it.rel), p, it.fi); err != nil {
			return st, fmt.Errorf("sync: %w", err)
		}
		st.Updated++
	}

	// Phase 3: delete what src lacks, keeping excluded paths.
	var gone []string
	err = walkIncluded(dst, excl, func(p, rel string, fi fs.FileInfo) error {
		if !want[rel] {
			gone = append(gone, p)
			if fi.IsDir() {
				return filepath.SkipDir
			}
		}
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("sync: %w", err)
	}
	for _, p := range gone {
		if err := os.RemoveAll(p); err != nil {
			return st, fmt.Errorf("sync: %w", err)
		}
		st.Deleted++
	}

	// Directory modes and times, deepest first, then the root's mode.
	for i := len(items) - 1; i >= 0; i-- {
		it := items[i]
		if it.fi.IsDir() {
			p := filepath.Join(dst, it.rel)
			os.Chmod(p, it.fi.Mode().Perm())
			os.Chtimes(p, it.fi.ModTime(), it.fi.ModTime())
		}
	}
	if err := os.Chmod(dst, srcRoot.Mode().Perm()); err != nil {
		return st, fmt.Errorf("sync: %w", err)
	}
	return st, nil
}

// walkIncluded calls fn for every path under root (not root itself) that
// excl does not match, skipping excluded directories whole. A path that
// vanishes during the walk is ignored.
func walkIncluded(root string, excl *pathmatch.Matcher, fn func(p, rel string, fi fs.FileInfo) error) error {
	return filepath.Walk(root, func(p string, fi fs.FileInfo, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if excl.Match(filepath.ToSlash(rel), fi.IsDir()) {
			if fi.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		return fn(p, rel, fi)
	})
}

// same is rsync's quick check: same type, size, mtime and mode; for
// symlinks, the same target.
func same(a, b fs.FileInfo, pa, pb string) bool {
	if a.Mode().Type() != b.Mode().Type() {
		return false
	}
	if a.Mode()&fs.ModeSymlink != 0 {
		ta, err1 := os.Readlink(pa)
		tb, err2 := os.Readlink(pb)
		return err1 == nil && err2 == nil && ta == tb
	}
	return a.Mode().IsRegular() && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && a.Mode().Perm() == b.Mode().Perm()
}

// move renames src over dst; across filesystems it copies into a temp file
// beside dst and renames that, so dst is never half written.
func move(src, dst string, fi fs.FileInfo) error {
	err := os.Rename(src, dst)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		return err
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		t, err := os.Readlink(src)
		if err != nil {
			return err
		}
		tmp := dst + ".ferry-tmp"
		os.Remove(tmp)
		if err := os.Symlink(t, tmp); err != nil {
			return err
		}
		return os.Rename(tmp, dst)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".ferry-tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return err
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	os.Chmod(tmp, fi.Mode().Perm())
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	return os.Rename(tmp, dst)
}
