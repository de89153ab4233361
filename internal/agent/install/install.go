// Package install keeps the releases of one app on a host:
//
//	releases/<id>/   unpacked artifact, read-only, complete once named so
//	current          symlink to the running release, flipped by rename(2)
//	previous         symlink to the release current named before
//	shared/          directories linked into every release
//	.ferry/          lock and one record per release
//
// A release directory gets its final name only after its archive was
// verified, fully unpacked, synced and recorded, so `current` can only ever
// name a complete release, whatever moment a crash happens at.
//
// What is in a release is the artifact's and what is in shared/ is the
// running app's, so nothing here follows a symlink of theirs: linkShared
// resolves every component on disk beneath the release and beneath
// shared/, and locking and removing a release go through descriptors
// opened with O_NOFOLLOW (fsutil.ChmodDirs, fsutil.RemoveTree).
//
// Modes: an app's directories are 0750 and a release 0550 (its files keep
// the archive's modes, less the write bits), records 0640. A release can
// hold secrets (.env, keys, config), so other users must not read it; the
// group may, which is how an app that runs as its own user will read its
// release once the agent gives the release that user's group.
package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/artifact"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// Names inside an app's directory.
const (
	dirMode     = 0o750 // the app's directories: releases/, shared/…, .ferry/
	releaseMode = 0o550 // every directory of an installed release
	fileMode    = 0o640 // records, the lock

	CurrentLink  = "current"
	PreviousLink = "previous"
	ReleasesDir  = "releases"
	SharedDir    = "shared"
	stateDir     = ".ferry"
	stagePrefix  = ".tmp-"
)

var idRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// Dir is the directory holding one app's releases.
type Dir struct {
	Path string
}

// Release is the record of one installed release.
type Release struct {
	ID        string    `json:"id"`
	SHA256    string    `json:"sha256"`
	Src       string    `json:"src,omitempty"`
	Installed time.Time `json:"installed"`
}

func (d Dir) releasePath(id string) string { return filepath.Join(d.Path, ReleasesDir, id) }
func (d Dir) recordPath(id string) string {
	return filepath.Join(d.Path, stateDir, "releases", id+".json")
}

// ReleasePath is where release id is unpacked.
func (d Dir) ReleasePath(id string) string { return d.releasePath(id) }

// Lock takes the app directory's exclusive lock without waiting; an error
// of kind ferry.ELOCKED says who holds it.
func (d Dir) Lock() (unlock func(), err error) {
	if err := os.MkdirAll(filepath.Join(d.Path, stateDir), dirMode); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	unlock, err = LockFile(filepath.Join(d.Path, stateDir, "lock"))
	if err != nil {
		return nil, err
	}
	// Whoever holds the lock is the only installer: staging directories
	// found now are an interrupted install's, even when this apply turns
	// out to have nothing to install.
	d.cleanStale()
	return unlock, nil
}

// LockFile takes an exclusive flock on path, writing our pid into it.
func LockFile(path string) (unlock func(), err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := io.ReadAll(io.LimitReader(f, 64))
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ferry.Errorf(ferry.ELOCKED, "%s is locked by another ferry (pid %s); wait for it to finish", path, strings.TrimSpace(string(b)))
		}
		return nil, fmt.Errorf("lock: %w", err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("%d\n", os.Getpid())), 0)
	return func() { f.Close() }, nil
}

// Current returns the id of the release `current` names, or "" when none.
func (d Dir) Current() (string, error) { return d.link(CurrentLink) }

// Previous returns the id of the release `previous` names, or "".
func (d Dir) Previous() (string, error) { return d.link(PreviousLink) }

func (d Dir) link(name string) (string, error) {
	t, err := os.Readlink(filepath.Join(d.Path, name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("install: %w", err)
	}
	return filepath.Base(t), nil
}

// Releases lists installed releases, oldest first. A directory without a
// record (not made by ferry) is listed with its mtime.
func (d Dir) Releases() ([]Release, error) {
	ents, err := os.ReadDir(filepath.Join(d.Path, ReleasesDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	var out []Release
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		r, err := d.Record(e.Name())
		// The directory's name is the id, whatever the record says: Prune
		// removes releases by it.
		r.ID = e.Name()
		if err != nil {
			fi, ierr := e.Info()
			if ierr != nil {
				continue
			}
			r = Release{ID: e.Name(), Installed: fi.ModTime()}
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Installed.Equal(out[j].Installed) {
			return out[i].Installed.Before(out[j].Installed)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Record reads the record of release id.
func (d Dir) Record(id string) (Release, error) {
	var r Release
	b, err := os.ReadFile(d.recordPath(id))
	if err != nil {
		return r, err
	}
	err = json.Unmarshal(b, &r)
	return r, err
}

// Find returns the id of an installed release of the artifact with this
// sha256, or "".
func (d Dir) Find(sha256 string) string {
	rs, _ := d.Releases()
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].SHA256 == sha256 && sha256 != "" {
			if _, err := os.Stat(d.releasePath(rs[i].ID)); err == nil {
				return rs[i].ID
			}
		}
	}
	return ""
}

// NextID names a new release v<N>-<first 8 of sha256>, N one more than the
// highest installed.
func (d Dir) NextID(sha256 string) string {
	rs, _ := d.Releases()
	n := 0
	for _, r := range rs {
		var k int
		if _, err := fmt.Sscanf(r.ID, "v%d-", &k); err == nil && k > n {
			n = k
		}
	}
	short := sha256
	if len(short) > 8 {
		short = short[:8]
	}
	return fmt.Sprintf("v%d-%s", n+1, short)
}

// Options for Install.
type Options struct {
	Limits artifact.Limits
	Shared []string // directories to link from shared/
	Src    string   // recorded for status
	// Writable leaves the release writable by its owner until Seal, for
	// post hooks that write into it (npm ci, a build step) as the agent's
	// user, root or not. It then shares no file with the current release:
	// a hook writing a file in place must not change the running one.
	Writable bool
}

// Install unpacks the artifact read from archive as release id. It does not
// touch `current`: Activate does. The caller holds the lock. On any error
// nothing under the release's final name exists.
//
// archive is read to its end before the release is named, and an error from
// any Read, the last one included, fails the install: a reader that
// verifies a digest as it streams can refuse the bytes at EOF (see
// fetch.Registry.Stream), and nothing is then left behind.
//
// Files unchanged from the current release (same path, size, mode, mtime
// and bytes) are hard-linked from it instead of written; releases are
// read-only and never modified in place, so sharing inodes is safe.
func (d Dir) Install(ctx context.Context, id, sha256 string, archive io.Reader, opt Options) error {
	_, err := d.InstallStats(ctx, id, sha256, archive, opt)
	return err
}

// InstallStats is Install, also saying what the unpack wrote and linked.
func (d Dir) InstallStats(ctx context.Context, id, sha256 string, archive io.Reader, opt Options) (st artifact.Stats, err error) {
	if !idRe.MatchString(id) {
		return st, ferry.Errorf(ferry.EINVALID, "release id %q: use letters, digits, '.', '_', '+' and '-'", id)
	}
	final := d.releasePath(id)
	if _, err := os.Lstat(final); err == nil {
		return st, ferry.Errorf(ferry.EINVALID, "release %s is already installed in %s", id, final)
	}
	rel := filepath.Join(d.Path, ReleasesDir)
	if err := os.MkdirAll(rel, dirMode); err != nil {
		return st, fmt.Errorf("install: %w", err)
	}
	// An older ferry made releases/ 0755 and its releases 0555: closing
	// releases/ hides all of them.
	if err := os.Chmod(rel, dirMode); err != nil {
		return st, fmt.Errorf("install: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(d.Path, stateDir, "releases"), dirMode); err != nil {
		return st, fmt.Errorf("install: %w", err)
	}
	d.cleanStale()
	stage, err := os.MkdirTemp(rel, stagePrefix+id+"-")
	if err != nil {
		return st, fmt.Errorf("install: %w", err)
	}
	defer func() {
		if err != nil {
			fsutil.RemoveTree(stage)
		}
	}()
	uo := artifact.UnpackOptions{Limits: opt.Limits, ReadOnly: !opt.Writable}
	if cur, _ := d.Current(); cur != "" && !opt.Writable {
		if fi, err := os.Lstat(d.releasePath(cur)); err == nil && fi.IsDir() {
			uo.Reuse = d.releasePath(cur)
		}
	}
	if st, err = artifact.UnpackWith(ctx, archive, stage, uo); err != nil {
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	// The tar stream ends before the compressed stream and the archive do.
	if _, err := io.Copy(io.Discard, archive); err != nil {
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	if err := d.linkShared(stage, opt.Shared); err != nil {
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	mode := fs.FileMode(releaseMode)
	if opt.Writable {
		mode = dirMode
	}
	if err := fsutil.ChmodDirs(stage, mode); err != nil {
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	if err := syncFS(stage); err != nil {
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	rec, _ := json.Marshal(Release{ID: id, SHA256: sha256, Src: opt.Src, Installed: time.Now().UTC()})
	if err := fsutil.WriteFile(d.recordPath(id), rec, fileMode); err != nil {
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	if err := os.Rename(stage, final); err != nil {
		os.Remove(d.recordPath(id))
		return st, fmt.Errorf("install %s: %w", id, err)
	}
	return st, fsutil.SyncDir(rel)
}

// Remove deletes release id, which must be neither current nor previous.
func (d Dir) Remove(id string) error {
	if !idRe.MatchString(id) {
		return ferry.Errorf(ferry.EINVALID, "release id %q: use letters, digits, '.', '_', '+' and '-'", id)
	}
	cur, _ := d.Current()
	prev, _ := d.Previous()
	switch id {
	case cur:
		return fmt.Errorf("install: %s is current; not removing it", id)
	case prev:
		return fmt.Errorf("install: %s is previous; not removing it", id)
	}
	if err := fsutil.RemoveTree(d.releasePath(id)); err != nil {
		return err
	}
	os.Remove(d.recordPath(id))
	return nil
}

// cleanStale removes staging directories left by an interrupted install.
func (d Dir) cleanStale() {
	ents, _ := os.ReadDir(filepath.Join(d.Path, ReleasesDir))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), stagePrefix) {
			fsutil.RemoveTree(filepath.Join(d.Path, ReleasesDir, e.Name()))
		}
	}
}

// linkShared replaces each shared directory in the release with a symlink
// to shared/<dir>, creating the latter.
//
// Removing what the artifact holds at that path and creating the link's
// parents would, through a symlink on the way, remove or create whatever
// the symlink leads to: so every component above the shared path must be
// a real directory in the release (or missing), and every component of it
// in shared/ too, where the app writes. Both are resolved through os.Root,
// which does not leave the release or shared/ even if a check is raced.
func (d Dir) linkShared(release string, dirs []string) error {
	if len(dirs) == 0 {
		return nil
	}
	rel, err := os.OpenRoot(release)
	if err != nil {
		return err
	}
	defer rel.Close()
	if err := os.MkdirAll(filepath.Join(d.Path, SharedDir), dirMode); err != nil {
		return err
	}
	sh, err := os.OpenRoot(filepath.Join(d.Path, SharedDir))
	if err != nil {
		return err
	}
	defer sh.Close()
	var done []string
	for _, s := range dirs {
		s = filepath.Clean(strings.TrimSuffix(s, "/"))
		if filepath.IsAbs(s) || s == "." || s == ".." || strings.HasPrefix(s, "../") {
			return ferry.Errorf(ferry.EINVALID, "shared: %q must be a directory inside the release", s)
		}
		for _, o := range done {
			// The first would be a symlink by now, the second removed
			// through it: what the app keeps there.
			if strings.HasPrefix(s, o+"/") {
				return ferry.Errorf(ferry.EINVALID, "shared: %q is inside %q, which is shared already; list only %q", s, o, o)
			}
			if strings.HasPrefix(o, s+"/") {
				return ferry.Errorf(ferry.EINVALID, "shared: %q holds %q, which is shared already; list only %q", s, o, s)
			}
		}
		if p, what := notRealDirs(sh, s); p != "" {
			return ferry.Errorf(ferry.EINVALID, "shared: %q: %s is %s in shared/; a shared directory must be reached through real directories only (ferry did not make it: replace %s with a directory)", s, p, what, filepath.Join(d.Path, SharedDir, p))
		}
		if p, what := notRealDirs(rel, filepath.Dir(s)); p != "" {
			return ferry.Errorf(ferry.EINVALID, "shared: %q: %s is %s in the release; a shared directory must be reached through real directories only (make %s a directory in the artifact, or share the directory it points at)", s, p, what, p)
		}
		if err := sh.MkdirAll(s, dirMode); err != nil {
			return err
		}
		if err := rel.RemoveAll(s); err != nil {
			return err
		}
		if dir := filepath.Dir(s); dir != "." {
			if err := rel.MkdirAll(dir, 0o755); err != nil {
				return err
			}
		}
		// Relative to where the release will live, not the staging dir.
		depth := strings.Count(s, "/") + 2
		target := strings.Repeat("../", depth) + filepath.Join(SharedDir, s)
		if err := rel.Symlink(target, s); err != nil {
			return err
		}
		done = append(done, s)
	}
	return nil
}

// notRealDirs returns the first component of p under root that exists
// and is not a directory, and what it is ("a symlink", "a file"); "" when
// every one is a directory or missing.
func notRealDirs(root *os.Root, p string) (string, string) {
	if p == "." {
		return "", ""
	}
	parts := strings.Split(p, "/")
	for i := range parts {
		q := strings.Join(parts[:i+1], "/")
		fi, err := root.Lstat(q)
		switch {
		case err != nil:
			return "", "" // missing: created as a directory below
		case fi.Mode()&fs.ModeSymlink != 0:
			return q, "a symlink"
		case !fi.IsDir():
			return q, "a file"
		}
	}
	return "", ""
}

// syncFS flushes the filesystem holding dir once, cheaper than an fsync
// per file, so a power loss cannot leave a named release with empty files.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Syncfs(int(f.Fd()))
}

// Seal makes release id read-only, as Install does without
// Options.Writable: after its post hooks wrote into it.
func (d Dir) Seal(id string) error {
	if !idRe.MatchString(id) {
		return ferry.Errorf(ferry.EINVALID, "release id %q: use letters, digits, '.', '_', '+' and '-'", id)
	}
	if err := fsutil.SealTree(d.releasePath(id), releaseMode); err != nil {
		return fmt.Errorf("seal release %s: %w", id, err)
	}
	return nil
}

// Grant gives gid the app's directories and release id to read (their
// group, with nothing left for others), and uid:gid its shared
// directories, which its processes write: for an app whose processes run
// as their own user (user: in ferry.yaml). Nothing is followed through a
// symlink.
func (d Dir) Grant(id string, uid, gid int, shared []string) error {
	if !idRe.MatchString(id) {
		return ferry.Errorf(ferry.EINVALID, "release id %q: use letters, digits, '.', '_', '+' and '-'", id)
	}
	for _, p := range []string{d.Path, filepath.Join(d.Path, ReleasesDir)} {
		if err := os.Lchown(p, -1, gid); err != nil {
			return fmt.Errorf("grant %s: %w", id, err)
		}
		if err := os.Chmod(p, dirMode); err != nil {
			return fmt.Errorf("grant %s: %w", id, err)
		}
	}
	err := filepath.WalkDir(d.releasePath(id), func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := os.Lchown(p, -1, gid); err != nil {
			return err
		}
		if e.Type()&fs.ModeSymlink != 0 {
			return nil // a link's own mode means nothing; its target is not ours to change
		}
		fi, err := e.Info()
		if err != nil {
			return err
		}
		// Others lose what they had: only the app's group reads it.
		return os.Chmod(p, fi.Mode().Perm()&^0o007)
	})
	if err != nil {
		return fmt.Errorf("grant %s: %w", id, err)
	}
	if len(shared) > 0 {
		if err := os.Lchown(filepath.Join(d.Path, SharedDir), -1, gid); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("grant %s: %w", id, err)
		}
	}
	for _, s := range shared {
		p := filepath.Join(d.Path, SharedDir, filepath.Clean(strings.TrimSuffix(s, "/")))
		if fi, err := os.Lstat(p); err != nil || !fi.IsDir() {
			continue // linkShared made it a directory, or refused
		}
		if err := os.Lchown(p, uid, gid); err != nil {
			return fmt.Errorf("grant %s: shared %s: %w", id, s, err)
		}
	}
	return nil
}
