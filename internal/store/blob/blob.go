// Package blob keeps artifacts in a bucket through gocloud.dev/blob: S3 and
// any S3-compatible server (s3://bucket/prefix?region=…, with
// endpoint=…&use_path_style=true for one that is not AWS), Google Cloud
// Storage (gs://bucket/prefix) and a local directory (file:///dir).
// Credentials come from where the cloud SDKs look (the AWS environment,
// shared config or instance role; GOOGLE_APPLICATION_CREDENTIALS or the
// metadata server), never from flags that would show in ps.
//
// Writes go through the bucket's atomic upload (S3's PutObject or a
// completed multipart upload; a temp file renamed into place for file://),
// and a failed or cancelled Put aborts the upload, so a reader finds the
// whole blob or none.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/gcsblob"  // gs:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets
	"gocloud.dev/gcerrors"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/store"
)

var _ store.Store = (*Store)(nil)

// Schemes are the bucket URL schemes Open knows.
var Schemes = []string{"s3", "gs", "file"}

// Store is a store.Store on a bucket.
type Store struct {
	b   *blob.Bucket
	url string // for messages, without query
}

// Open opens the bucket rawURL names; a path after the bucket becomes a
// key prefix (s3://bucket/ferry/…).
func Open(ctx context.Context, rawURL string) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil || !slices.Contains(Schemes, u.Scheme) {
		return nil, ferry.Errorf(ferry.EINVALID, "store %q: use s3://bucket[/prefix]?region=…, gs://bucket[/prefix] or file:///dir", rawURL)
	}
	prefix := ""
	if u.Scheme != "file" {
		prefix = strings.Trim(u.Path, "/")
		u.Path = ""
	}
	b, err := blob.OpenBucket(ctx, u.String())
	if err != nil {
		return nil, fmt.Errorf("store: open %s://%s%s: %w", u.Scheme, u.Host, u.Path, err)
	}
	if prefix != "" {
		b = blob.PrefixedBucket(b, prefix+"/")
	}
	return &Store{b: b, url: u.Scheme + "://" + u.Host + "/" + prefix}, nil
}

// Close closes the bucket.
func (s *Store) Close() error { return s.b.Close() }

// Put uploads size bytes of r under key; a reader that ends early, fails,
// or a cancelled ctx aborts the upload.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if size < 0 {
		return ferry.Errorf(ferry.EINVALID, "store: put %s: negative size %d", key, size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	wctx, abort := context.WithCancel(ctx)
	defer abort()
	w, err := s.b.NewWriter(wctx, key, &blob.WriterOptions{ContentType: "application/octet-stream"})
	if err != nil {
		return s.wrap(ctx, key, err)
	}
	n, err := io.Copy(w, io.LimitReader(r, size))
	if err == nil && n < size {
		err = fmt.Errorf("reader ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	if err == nil {
		err = ctx.Err()
	}
	if err != nil {
		abort() // a writer whose context ended discards what it was given
		w.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("store: put %s: %w", key, err)
	}
	if err := w.Close(); err != nil {
		return s.wrap(ctx, key, err)
	}
	return nil
}

// Open reads key from offset.
func (s *Store) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, int64, error) {
	size, err := s.Stat(ctx, key)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 || offset > size {
		return nil, 0, ferry.Errorf(ferry.EINVALID, "store: open %s at %d: the blob has %d bytes", key, offset, size)
	}
	if offset == size {
		// S3 answers a range that starts at the end with 416.
		return io.NopCloser(strings.NewReader("")), size, nil
	}
	r, err := s.b.NewRangeReader(ctx, key, offset, -1, nil)
	if err != nil {
		return nil, 0, s.wrap(ctx, key, err)
	}
	return r, size, nil
}

// Stat returns key's size.
func (s *Store) Stat(ctx context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	a, err := s.b.Attributes(ctx, key)
	if err != nil {
		return 0, s.wrap(ctx, key, err)
	}
	return a.Size, nil
}

// Delete removes key; a missing key is ENOTFOUND.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// S3 deletes a missing key without a word: ask first, so every store
	// says the same.
	if _, err := s.b.Attributes(ctx, key); err != nil {
		return s.wrap(ctx, key, err)
	}
	return s.wrap(ctx, key, s.b.Delete(ctx, key))
}

// List returns the keys with prefix, sorted.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		if err := store.CheckKey(prefix[:i]); err != nil {
			return nil, ferry.Errorf(ferry.EINVALID, "store: list: prefix %q: %s", prefix, err)
		}
	}
	keys := []string{}
	it := s.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		obj, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, s.wrap(ctx, prefix, err)
		}
		if !obj.IsDir && store.CheckKey(obj.Key) == nil {
			keys = append(keys, obj.Key)
		}
	}
	slices.Sort(keys)
	return keys, nil
}

// SignedURL is a URL that reads key without credentials until expiry, for
// agents that download straight from the bucket.
func (s *Store) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	u, err := s.b.SignedURL(ctx, key, &blob.SignedURLOptions{Expiry: expiry})
	if err != nil {
		return "", s.wrap(ctx, key, err)
	}
	return u, nil
}

func checkKey(key string) error {
	if err := store.CheckKey(key); err != nil {
		return ferry.Errorf(ferry.EINVALID, "store: key %q: %s", key, err)
	}
	return nil
}

// wrap gives a missing key ENOTFOUND and ctx's end its own error.
func (s *Store) wrap(ctx context.Context, key string, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	case gcerrors.Code(err) == gcerrors.NotFound, errors.Is(err, syscall.ENOTDIR):
		// (file://: a key below a key that is a file is missing too)
		return ferry.WrapError(ferry.ENOTFOUND, err, "store %s: %s", s.url, key)
	}
	return fmt.Errorf("store %s: %s: %w", s.url, key, err)
}
