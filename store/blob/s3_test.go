package blob_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/ferrydeploy/ferry/store"
	"github.com/ferrydeploy/ferry/store/blob"
	"github.com/ferrydeploy/ferry/store/storetest"
)

const (
	testAccess = "ferrytest"
	testSecret = "ferrytestsecret"
)

// startVersityGW runs a real S3-compatible server (versitygw's posix
// backend) on loopback and returns its endpoint. Without the binary the
// test skips, except under CI, where it fails: scripts/install-deps.sh
// builds it.
func startVersityGW(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("versitygw is not installed: run scripts/install-deps.sh")
		}
		t.Skip("versitygw is not installed (scripts/install-deps.sh builds it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "--port", addr, "posix", t.TempDir())
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+testAccess, "ROOT_SECRET_KEY="+testSecret)
	log, _ := os.Create(t.TempDir() + "/versitygw.log")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("versitygw did not listen on %s within 20s:\n%s", addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "http://" + addr
}

func s3Client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(testAccess, testSecret, ""),
	})
}

// TestS3 runs the conformance suite on a real S3-compatible server, each
// subtest in a bucket of its own, through a key prefix as the server's
// --store s3://bucket/prefix would.
func TestS3(t *testing.T) {
	endpoint := startVersityGW(t)
	t.Setenv("AWS_ACCESS_KEY_ID", testAccess)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecret)
	cli := s3Client(endpoint)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++
		bucket := fmt.Sprintf("ferry-test-%d", n)
		if _, err := cli.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			t.Fatalf("create bucket: %v", err)
		}
		s, err := blob.Open(context.Background(), fmt.Sprintf("s3://%s/artifacts?endpoint=%s&use_path_style=true&region=us-east-1", bucket, endpoint))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestS3Source: an s3:// URL reads through Source, from an offset too, as
// ferry apply and the agent fetch artifacts named that way.
func TestS3Source(t *testing.T) {
	endpoint := startVersityGW(t)
	t.Setenv("AWS_ACCESS_KEY_ID", testAccess)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecret)
	ctx := context.Background()
	if _, err := s3Client(endpoint).CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("src")}); err != nil {
		t.Fatal(err)
	}
	q := "?endpoint=" + endpoint + "&use_path_style=true&region=us-east-1"
	st, err := blob.Open(ctx, "s3://src"+q)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	body := []byte("0123456789abcdef")
	if err := st.Put(ctx, "dist/hello-v1.tar.zst", bytes.NewReader(body), int64(len(body))); err != nil {
		t.Fatal(err)
	}
	var src blob.Source
	for _, off := range []int64{0, 10} {
		u, _ := url.Parse("s3://src/dist/hello-v1.tar.zst" + q)
		rc, resumed, err := src.Open(ctx, u, off)
		if err != nil {
			t.Fatalf("Open at %d: %v", off, err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, body[off:]) || resumed != (off > 0) {
			t.Fatalf("Open at %d: %q resumed=%v", off, got, resumed)
		}
	}
	u, _ := url.Parse("s3://src/missing" + q)
	if _, _, err := src.Open(ctx, u, 0); err == nil {
		t.Fatal("Open of a missing object succeeded")
	}
}

// TestS3Multipart: a 50 MB artifact goes up as a multipart upload (its
// ETag says how many parts), the way S3 takes anything over one part.
func TestS3Multipart(t *testing.T) {
	endpoint := startVersityGW(t)
	t.Setenv("AWS_ACCESS_KEY_ID", testAccess)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecret)
	ctx := context.Background()
	cli := s3Client(endpoint)
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("multi")}); err != nil {
		t.Fatal(err)
	}
	st, err := blob.Open(ctx, "s3://multi?endpoint="+endpoint+"&use_path_style=true&region=us-east-1")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const size = 50 << 20
	if err := st.Put(ctx, "big", io.LimitReader(zeros{}, size), size); err != nil {
		t.Fatal(err)
	}
	head, err := cli.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("multi"), Key: aws.String("big")})
	if err != nil {
		t.Fatal(err)
	}
	if etag := aws.ToString(head.ETag); !strings.Contains(etag, "-") || aws.ToInt64(head.ContentLength) != size {
		t.Fatalf("ETag %s, %d bytes: want a multipart ETag (\"…-N\") and %d bytes", etag, aws.ToInt64(head.ContentLength), size)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
