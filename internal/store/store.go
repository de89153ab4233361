// Package store is where artifacts live: a directory (store/dir, the
// default), S3, S3-compatible servers and GCS (store/blob), behind one
// interface that every backend passes the same suite for (store/storetest).
// An artifact's key names its app and digest: ArtifactKey.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/ferrydeploy/ferry"
)

// Store holds artifact blobs.
//
// Errors: a missing key returns an error whose ferry.ErrorCode is
// ferry.ENOTFOUND; a cancelled ctx returns ctx.Err(); anything else is the
// backend's failure, wrapped.
type Store interface {
	// Put stores r's size bytes under key atomically: a reader never sees
	// a partial blob, and a failed Put leaves nothing behind.
	Put(ctx context.Context, key string, r io.Reader, size int64) error
	// Open reads key from offset on; size is the blob's whole size.
	Open(ctx context.Context, key string, offset int64) (rc io.ReadCloser, size int64, err error)
	// Stat returns key's size.
	Stat(ctx context.Context, key string) (int64, error)
	Delete(ctx context.Context, key string) error
	// List returns the keys with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// ArtifactKey is where app's artifact with this sha256 lives:
// artifacts/<app>/<sha256>.tar.zst, content-addressed, so publishing the
// same bytes twice stores them once.
func ArtifactKey(app, sha256 string) string {
	return "artifacts/" + app + "/" + sha256 + ".tar.zst"
}

// LegacyKey is where servers before ArtifactKey kept an artifact; they are
// still read from there.
func LegacyKey(sha256 string) string { return "sha256/" + sha256 }

// Verify reads key whole and fails with ferry.ECORRUPT when its sha256 is
// not want: an object changed in the store after it was written.
func Verify(ctx context.Context, s Store, key, want string) error {
	rc, _, err := s.Open(ctx, key, 0)
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("store: verify %s: %w", key, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return ferry.Errorf(ferry.ECORRUPT, "store: %s has sha256 %s, not %s: the stored object is corrupt; publish the artifact again", key, got, want)
	}
	return nil
}

// CheckKey accepts slash-separated relative names whose elements are not
// empty, "." or "..". Elements may not start with a dot either: that is
// where a directory store's temp files live, and no artifact key needs it.
func CheckKey(key string) error {
	if key == "" {
		return errors.New("empty")
	}
	if strings.ContainsAny(key, "\\\x00") {
		return errors.New("contains a backslash or NUL")
	}
	if path.IsAbs(key) {
		return errors.New("absolute")
	}
	for elem := range strings.SplitSeq(key, "/") {
		if elem == "" || strings.HasPrefix(elem, ".") {
			return errors.New(`has an empty element or one starting with "."`)
		}
	}
	return nil
}
