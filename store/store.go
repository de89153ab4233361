// Package store is where artifacts live: a directory (store/dir, the
// default), S3 or GCS later, behind one interface that every backend passes
// the same suite for (store/storetest). Keys are "sha256/<hex>".
package store

import (
	"context"
	"errors"
	"io"
	"path"
	"strings"
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

// Key is where an artifact with this sha256 lives.
func Key(sha256 string) string { return "sha256/" + sha256 }

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
