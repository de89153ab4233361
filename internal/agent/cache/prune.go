package cache

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
)

// staleTemp is how long a temp file may go unwritten before Prune takes it
// for the leftover of a crashed download. A download in progress writes to
// its file all the time, so its mtime stays fresh.
const staleTemp = time.Hour

type entry struct {
	digest string
	size   int64
	mtime  time.Time
}

// Prune removes least recently used files until the total is within
// MaxBytes, never one whose digest is in keep (lowercase hex), and removes
// temp files left by downloads that stopped more than an hour ago. It
// returns the paths it removed. Files it could not remove are reported in
// the error and do not stop it; the kept files alone may exceed MaxBytes.
func (c *Cache) Prune(keep map[string]bool) ([]string, error) {
	dir := filepath.Join(c.Dir, "sha256")
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	var removed []string
	var errs []error
	remove := func(name string) {
		p := filepath.Join(dir, name)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			return
		}
		removed = append(removed, p)
	}
	var entries []entry
	var total int64
	for _, de := range des {
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) { // a concurrent Get renamed or removed it
			continue
		} else if err != nil {
			errs = append(errs, err)
			continue
		}
		name := de.Name()
		switch {
		case strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-"): // fsutil's temp files
			if time.Since(fi.ModTime()) > staleTemp {
				remove(name)
			}
		case ferry.CheckSHA256(name) == nil && fi.Mode().IsRegular():
			entries = append(entries, entry{name, fi.Size(), fi.ModTime()})
			total += fi.Size()
		}
	}
	limit := c.MaxBytes
	if limit <= 0 {
		limit = DefaultMaxBytes
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := a.mtime.Compare(b.mtime); c != 0 {
			return c
		}
		return strings.Compare(a.digest, b.digest)
	})
	for _, e := range entries {
		if total <= limit {
			break
		}
		if keep[e.digest] {
			continue
		}
		n := len(removed)
		if remove(e.digest); len(removed) > n {
			total -= e.size
		}
	}
	if total > limit {
		c.logger().Warn("cache is over its bound with only kept files left", "bytes", total, "max", limit)
	}
	if len(errs) > 0 {
		return removed, fmt.Errorf("cache: prune: %w", errors.Join(errs...))
	}
	return removed, nil
}
