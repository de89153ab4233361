// Package store is where artifacts live: a directory (store/dir, the
// default), S3 or GCS later, behind one interface that every backend passes
// the same suite for (store/storetest). Keys are "sha256/<hex>".
package store

import (
	"context"
	"io"
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
