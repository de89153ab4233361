package install

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// Activate points `current` at release id and `previous` at the release
// current named before. Each flip is a rename(2) of a fresh symlink over the
// old one, so readers see the old or the new target, never neither.
func (d Dir) Activate(id string) error {
	if _, err := os.Stat(d.releasePath(id)); err != nil {
		return ferry.Errorf(ferry.ENOTFOUND, "release %s is not installed in %s", id, d.Path)
	}
	old, err := d.Current()
	if err != nil {
		return err
	}
	if old == id {
		return nil
	}
	if old != "" {
		if err := d.flip(PreviousLink, old); err != nil {
			return err
		}
	}
	return d.flip(CurrentLink, id)
}

func (d Dir) flip(name, id string) error {
	link := filepath.Join(d.Path, name)
	tmp := link + ".tmp"
	os.Remove(tmp)
	if err := os.Symlink(filepath.Join(ReleasesDir, id), tmp); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("install: %w", err)
	}
	return fsutil.SyncDir(d.Path)
}

// PruneResult says what retention did.
type PruneResult struct {
	Removed []string
	Failed  map[string]error
}

// Err joins the failures, or is nil.
func (p PruneResult) Err() error {
	var errs []error
	for id, err := range p.Failed {
		errs = append(errs, fmt.Errorf("could not remove release %s: %w", id, err))
	}
	return errors.Join(errs...)
}

// Prune keeps the newest keep releases, always counting current and
// previous among them, and removes the rest. It goes on past a release it
// cannot remove and reports it in Failed.
func (d Dir) Prune(keep int) (PruneResult, error) {
	res := PruneResult{Failed: map[string]error{}}
	rs, err := d.Releases()
	if err != nil {
		return res, err
	}
	cur, _ := d.Current()
	prev, _ := d.Previous()
	protected := map[string]bool{cur: true, prev: true}
	left := keep
	for _, id := range []string{cur, prev} {
		if id != "" {
			left--
		}
	}
	for i := len(rs) - 1; i >= 0; i-- {
		id := rs[i].ID
		if protected[id] {
			continue
		}
		if left > 0 {
			left--
			continue
		}
		if err := d.Remove(id); err != nil {
			res.Failed[id] = err
			continue
		}
		res.Removed = append(res.Removed, id)
	}
	return res, nil
}
