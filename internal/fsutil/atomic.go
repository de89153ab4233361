// Package fsutil writes files so that a crash leaves either the old file or
// the new one, never half of one: temp file in the same directory, fsync,
// rename, fsync of the directory. It also resolves names beneath a
// directory on disk (beneath.go) and changes or removes whole trees
// without following the symlinks in them (tree.go), for the code that
// writes what an archive or an app controls.
package fsutil

import (
	"fmt"
	"os"
	"path/filepath"
)

// File is a file being written atomically. Commit makes it visible under
// its final name; Abort (safe after Commit) removes the temp file.
type File struct {
	*os.File
	final string
	done  bool
}

// Create starts an atomic write of path with mode perm.
func Create(path string, perm os.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, final: path}, nil
}

// Commit syncs and renames the file into place.
func (f *File) Commit() error {
	if f.done {
		return fmt.Errorf("fsutil: %s already committed", f.final)
	}
	if err := f.Sync(); err != nil {
		f.Abort()
		return err
	}
	if err := f.Close(); err != nil {
		f.Abort()
		return err
	}
	if err := os.Rename(f.Name(), f.final); err != nil {
		f.Abort()
		return err
	}
	f.done = true
	return SyncDir(filepath.Dir(f.final))
}

// Abort discards the write. It does nothing after Commit.
func (f *File) Abort() {
	if f.done {
		return
	}
	f.done = true
	f.Close()
	os.Remove(f.Name())
}

// WriteFile writes data to path atomically.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Abort()
		return err
	}
	return f.Commit()
}

// SyncDir fsyncs a directory so a rename in it survives a power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
