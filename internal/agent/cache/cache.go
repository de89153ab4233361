// Package cache keeps downloaded artifacts on the host by content:
// <root>/cache/sha256/<digest>. A file appears under its digest's name only
// once it is complete and verified, so an install reads either the whole
// artifact or nothing; Prune bounds the total by dropping the least recently
// used.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fetch"
	"github.com/ferrydeploy/ferry/internal/fsutil"
)

// DefaultMaxBytes bounds the cache when Cache.MaxBytes is 0.
const DefaultMaxBytes = 5 << 30

// Modes of the cache's directories (Dir and Dir/sha256, when Get creates
// them) and files: only the agent's user reads artifacts, which hold what
// releases hold (config, keys); installs read them as that user.
const (
	dirMode  = 0o700
	fileMode = 0o400
)

// emptySHA256 is the digest of no bytes: the one artifact that may be empty.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

// Cache is a content-addressed store of downloaded files. Its methods are
// safe for concurrent use; a Cache must not be copied after first use.
//
// Several processes may share Dir without a lock: each download goes to its
// own temp file, and renaming a verified file over an identical one is
// harmless, so a race costs bandwidth, never a wrong or partial file.
type Cache struct {
	Dir      string         // files live in Dir/sha256/<digest>
	MaxBytes int64          // bound kept by Prune; 0 means DefaultMaxBytes
	Registry fetch.Registry // nil means fetch.NewRegistry()
	Fetch    fetch.Options  // retries, limits; Get sets Checksum
	Logger   *slog.Logger

	mu       sync.Mutex
	inflight map[string]*download // by digest
	reg      fetch.Registry       // Registry or the default, made once
}

// download is one Get fetching a digest; others wanting it wait on done.
type download struct {
	done    chan struct{}
	waiters int // for tests: how many Gets wait on this one
	path    string
	hit     bool
	err     error
}

// Path returns where the file with this digest is (or would be) kept.
func (c *Cache) Path(sha256 string) string {
	return filepath.Join(c.Dir, "sha256", strings.ToLower(sha256))
}

// Get returns the path of the verified file with this sha256, downloading
// src when the cache does not have it; hit reports that it did. A hit is
// not downloaded again, but its mtime is set to now, which is what Prune's
// LRU order reads. Concurrent Gets of one digest download it once.
//
// A failed or cancelled download leaves no file under the digest's name.
// Errors: ferry.EINVALID for a malformed sha256, or wrapping
// fetch.ErrChecksum when src's bytes do not match; ctx's error when it is
// done.
func (c *Cache) Get(ctx context.Context, src, sha256 string) (path string, hit bool, err error) {
	digest := strings.ToLower(sha256)
	if err := ferry.CheckSHA256(digest); err != nil {
		return "", false, ferry.WrapError(ferry.EINVALID, err, "cache")
	}
	if c.Dir == "" {
		return "", false, ferry.Errorf(ferry.EINVALID, "cache: no directory set")
	}
	for {
		c.mu.Lock()
		if c.inflight == nil {
			c.inflight = make(map[string]*download)
		}
		d, busy := c.inflight[digest]
		if !busy {
			d = &download{done: make(chan struct{})}
			c.inflight[digest] = d
			c.mu.Unlock()
			d.path, d.hit, d.err = c.get(ctx, src, digest)
			c.mu.Lock()
			delete(c.inflight, digest)
			c.mu.Unlock()
			close(d.done)
			return d.path, d.hit, d.err
		}
		d.waiters++
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false, ctx.Err()
		case <-d.done:
		}
		// The Get that downloaded for us was cancelled by its own ctx, not
		// ours: try again, as the downloader this time.
		if d.err != nil && (errors.Is(d.err, context.Canceled) || errors.Is(d.err, context.DeadlineExceeded)) {
			continue
		}
		return d.path, d.hit, d.err
	}
}

// get serves one digest while no other Get in this process does.
//
// A hit is trusted, not hashed again: the rename protocol (temp file,
// fsync, rename, fsync of the directory) means the name only ever points at
// bytes that were verified, and hashing a multi-GiB artifact on every deploy
// would cost more than it guards. What a crash can still leave is a file
// of the right name and no bytes, from a writer that skipped the fsync
// (ext4's delayed allocation does this); that is cheap to see, so an empty
// file is taken for a miss.
func (c *Cache) get(ctx context.Context, src, digest string) (string, bool, error) {
	path := c.Path(digest)
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.Mode().IsRegular() && (fi.Size() > 0 || digest == emptySHA256):
		now := time.Now()
		if err := os.Chtimes(path, now, now); err != nil {
			return "", false, fmt.Errorf("cache: %w", err)
		}
		return path, true, nil
	case err == nil:
		c.logger().Warn("cache entry is not a complete file; downloading it again", "path", path, "size", fi.Size(), "mode", fi.Mode())
		if err := os.Remove(path); err != nil {
			return "", false, fmt.Errorf("cache: %w", err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return "", false, fmt.Errorf("cache: %w", err)
	}
	// The agent's alone: an artifact is as secret as the release it
	// unpacks to. The chmod closes a directory an older ferry made 0755.
	if err := os.MkdirAll(filepath.Dir(path), dirMode); err != nil {
		return "", false, fmt.Errorf("cache: %w", err)
	}
	if err := os.Chmod(filepath.Dir(path), dirMode); err != nil {
		return "", false, fmt.Errorf("cache: %w", err)
	}
	// Read-only: nothing should change an artifact once it is verified.
	f, err := fsutil.Create(path, fileMode)
	if err != nil {
		return "", false, fmt.Errorf("cache: %w", err)
	}
	defer f.Abort() // removes the temp file unless committed
	opt := c.Fetch
	opt.Checksum = digest
	if opt.Logger == nil {
		opt.Logger = c.Logger
	}
	res, err := c.registry().Download(ctx, src, f.File, opt)
	if err != nil {
		if ctx.Err() != nil {
			return "", false, ctx.Err()
		}
		return "", false, fmt.Errorf("cache: %w", err)
	}
	if res.SHA256 != digest { // Download checked; this guards a change to its contract
		return "", false, fmt.Errorf("cache: %s has sha256 %s, not %s: %w", src, res.SHA256, digest, fetch.ErrChecksum)
	}
	if err := f.Commit(); err != nil {
		return "", false, fmt.Errorf("cache: %w", err)
	}
	return path, false, nil
}

func (c *Cache) registry() fetch.Registry {
	if c.Registry != nil {
		return c.Registry
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reg == nil {
		c.reg = fetch.NewRegistry()
	}
	return c.reg
}

func (c *Cache) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}
