package manifest

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/pathmatch"
)

// newPathMatcher compiles excludes and the exclude_from file, which, as in
// stretcher, is read from inside the unpacked archive unless absolute.
func newPathMatcher(m *Manifest, stage string) (*pathmatch.Matcher, error) {
	excl, err := pathmatch.New(m.Excludes...)
	if err != nil {
		return nil, ferry.WrapError(ferry.EINVALID, err, "excludes")
	}
	if m.ExcludeFrom != "" {
		p := m.ExcludeFrom
		if !filepath.IsAbs(p) {
			p = filepath.Join(stage, p)
		}
		f, err := os.Open(p)
		if err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "exclude_from: %s", m.ExcludeFrom)
		}
		defer f.Close()
		if err := excl.AddFrom(f); err != nil {
			return nil, ferry.WrapError(ferry.EINVALID, err, "exclude_from: %s", m.ExcludeFrom)
		}
	}
	return excl, nil
}

// exchange atomically swaps two paths with renameat2(RENAME_EXCHANGE);
// where the filesystem cannot, it moves b aside, moves a in, and puts b back
// if that fails.
func exchange(a, b string) error {
	err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
	if err == nil {
		return nil
	}
	if err != unix.EINVAL && err != unix.ENOSYS && err != unix.ENOTSUP {
		return err
	}
	aside := b + ".ferry-old"
	os.RemoveAll(aside)
	if err := os.Rename(b, aside); err != nil {
		return err
	}
	if err := os.Rename(a, b); err != nil {
		if rerr := os.Rename(aside, b); rerr != nil {
			return fmt.Errorf("%w (and putting %s back failed: %v)", err, b, rerr)
		}
		return err
	}
	return os.Rename(aside, a)
}
