package blob_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/store/blob"
	"github.com/ferrydeploy/ferry/internal/store/blob/blobtest"
	"github.com/ferrydeploy/ferry/internal/store/storetest"
)

// TestS3 runs the conformance suite on a real S3-compatible server, each
// subtest in a bucket of its own, through a key prefix as the server's
// --store s3://bucket/prefix would.
func TestS3(t *testing.T) {
	srv := blobtest.StartS3(t)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++
		return open(t, srv.Bucket(t, fmt.Sprintf("ferry-test-%d", n), "artifacts"))
	})
}

// TestGCS runs the conformance suite on gs:// buckets of a GCS emulator,
// through a key prefix as --store gs://bucket/prefix would.
func TestGCS(t *testing.T) {
	srv := blobtest.StartGCS(t)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++
		return open(t, srv.Bucket(t, fmt.Sprintf("ferry-gcs-%d", n), "artifacts"))
	})
}

func open(t *testing.T, rawURL string) *blob.Store {
	t.Helper()
	s, err := blob.Open(context.Background(), rawURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestS3Source: an s3:// URL reads through Source, from an offset too, as
// ferry apply and the agent fetch artifacts named that way; gs:// the same.
func TestS3Source(t *testing.T) {
	s3srv := blobtest.StartS3(t)
	gcs := blobtest.StartGCS(t)
	ctx := context.Background()
	for _, tt := range []struct{ bucket, src, query string }{
		{s3srv.Bucket(t, "src", ""), "s3://src/dist/hello-v1.tar.zst", s3srv.Query()},
		{gcs.Bucket(t, "src", ""), "gs://src/dist/hello-v1.tar.zst", ""},
	} {
		st := open(t, tt.bucket)
		body := []byte("0123456789abcdef")
		if err := st.Put(ctx, "dist/hello-v1.tar.zst", bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		var src blob.Source
		for _, off := range []int64{0, 10} {
			u, _ := url.Parse(tt.src + tt.query)
			rc, resumed, err := src.Open(ctx, u, off)
			if err != nil {
				t.Fatalf("%s at %d: %v", tt.src, off, err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if !bytes.Equal(got, body[off:]) || resumed != (off > 0) {
				t.Fatalf("%s at %d: %q resumed=%v", tt.src, off, got, resumed)
			}
		}
		u, _ := url.Parse(strings.Replace(tt.src, "dist/hello-v1.tar.zst", "missing", 1) + tt.query)
		if _, _, err := src.Open(ctx, u, 0); err == nil {
			t.Fatalf("%s: Open of a missing object succeeded", u)
		}
	}
}

// TestS3Multipart: a 50 MB artifact goes up as a multipart upload (its
// ETag says how many parts), the way S3 takes anything over one part.
func TestS3Multipart(t *testing.T) {
	srv := blobtest.StartS3(t)
	ctx := context.Background()
	st := open(t, srv.Bucket(t, "multi", ""))
	const size = 50 << 20
	if err := st.Put(ctx, "big", io.LimitReader(zeros{}, size), size); err != nil {
		t.Fatal(err)
	}
	head, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("multi"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	if etag := aws.ToString(head.ETag); !strings.Contains(etag, "-") || aws.ToInt64(head.ContentLength) != size {
		t.Fatalf("ETag %s, %d bytes: want a multipart ETag (\"…-N\") and %d bytes", etag, aws.ToInt64(head.ContentLength), size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
