package blob

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"

	"gocloud.dev/blob"
)

// Source reads s3://bucket/key?region=…[&endpoint=…&use_path_style=true]
// and gs://bucket/key URLs, for ferry apply manifests and desired states
// that name artifacts in a bucket, as stretcher's do. It has fetch.Source's
// method, so callers register it for "s3" and "gs" in a fetch.Registry;
// credentials come from where the cloud SDKs look. Buckets stay open for
// the Source's life.
type Source struct {
	mu      sync.Mutex
	buckets map[string]*blob.Bucket // by bucket URL without the key
}

// Open reads the object u names from offset; resumed is true when it
// starts there.
func (s *Source) Open(ctx context.Context, u *url.URL, offset int64) (io.ReadCloser, bool, error) {
	key := strings.TrimPrefix(u.Path, "/")
	if (u.Scheme != "s3" && u.Scheme != "gs") || u.Host == "" || key == "" {
		return nil, false, fmt.Errorf("%s: want s3://bucket/key or gs://bucket/key", u.Redacted())
	}
	b, err := s.bucket(ctx, u)
	if err != nil {
		return nil, false, err
	}
	r, err := b.NewRangeReader(ctx, key, offset, -1, nil)
	if err != nil {
		return nil, false, fmt.Errorf("%s://%s/%s: %w", u.Scheme, u.Host, key, err)
	}
	return r, offset > 0, nil
}

func (s *Source) bucket(ctx context.Context, u *url.URL) (*blob.Bucket, error) {
	bu := url.URL{Scheme: u.Scheme, Host: u.Host, RawQuery: u.RawQuery}
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.buckets[bu.String()]; ok {
		return b, nil
	}
	b, err := blob.OpenBucket(ctx, bu.String())
	if err != nil {
		return nil, fmt.Errorf("open bucket %s://%s: %w", u.Scheme, u.Host, err)
	}
	if s.buckets == nil {
		s.buckets = map[string]*blob.Bucket{}
	}
	s.buckets[bu.String()] = b
	return b, nil
}
