// Package blobtest starts real bucket servers on loopback for tests: a
// versitygw S3-compatible server and fake-gcs-server, a GCS emulator.
// Without the binary a test skips, except under CI, where it fails:
// scripts/install-deps.sh builds both.
package blobtest

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ferrydeploy/ferry/internal/testenv"
)

// The S3 server's root credentials; StartS3 puts them in the test's AWS
// environment, where s3:// stores find them.
const (
	AccessKey = "ferrytest"
	SecretKey = "ferrytestsecret"
)

// S3 is a running S3-compatible server.
type S3 struct {
	Endpoint string // http://127.0.0.1:PORT
}

// StartS3 runs versitygw's posix backend in a temp dir on loopback until
// the test ends and sets AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for
// the test.
func StartS3(t testing.TB) *S3 { return StartS3On(t, "127.0.0.1") }

// StartS3On is StartS3 listening on ip, for clients in other network
// namespaces.
func StartS3On(t testing.TB, ip string) *S3 {
	t.Helper()
	addr := freeAddr(t, ip)
	cmd := exec.Command(testenv.NeedCommand(t, "versitygw"), "--port", addr, "posix", t.TempDir())
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	start(t, cmd, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	return &S3{Endpoint: "http://" + addr}
}

// Client is an S3 client of the server, for what stores do not do (make
// buckets, look at objects).
func (s *S3) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(AccessKey, SecretKey, ""),
	})
}

// Bucket makes a bucket and returns the s3:// store URL of prefix in it
// ("" for none).
func (s *S3) Bucket(t testing.TB, name, prefix string) string {
	t.Helper()
	if _, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	return "s3://" + name + "/" + prefix + s.Query()
}

// Query is what an s3:// URL needs to reach this server.
func (s *S3) Query() string {
	return "?endpoint=" + s.Endpoint + "&use_path_style=true&region=us-east-1"
}

// GCS is a running GCS emulator.
type GCS struct {
	Addr string // 127.0.0.1:PORT
}

// StartGCS runs fake-gcs-server until the test ends and sets
// STORAGE_EMULATOR_HOST, which gs:// stores then talk to.
func StartGCS(t testing.TB) *GCS {
	t.Helper()
	addr := freeAddr(t, "127.0.0.1")
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(testenv.NeedCommand(t, "fake-gcs-server"), "-scheme", "http", "-host", "127.0.0.1", "-port", port,
		"-backend", "filesystem", "-filesystem-root", t.TempDir(),
		"-external-url", "http://"+addr, "-public-host", addr, "-log-level", "warn")
	start(t, cmd, func() bool {
		resp, err := http.Get("http://" + addr + "/storage/v1/b?project=test")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	t.Setenv("STORAGE_EMULATOR_HOST", addr)
	return &GCS{Addr: addr}
}

// Bucket makes a bucket and returns the gs:// store URL of prefix in it.
func (g *GCS) Bucket(t testing.TB, name, prefix string) string {
	t.Helper()
	resp, err := http.Post("http://"+g.Addr+"/storage/v1/b?project=test", "application/json",
		bytes.NewReader([]byte(`{"name":`+strconv.Quote(name)+`}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create bucket %s: %s", name, resp.Status)
	}
	return "gs://" + name + "/" + prefix
}

func freeAddr(t testing.TB, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs cmd with its output in a log file until the test ends, and
// waits up to 20 s for up to say it serves.
func start(t testing.TB, cmd *exec.Cmd, up func() bool) {
	t.Helper()
	log, err := os.Create(t.TempDir() + "/server.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for !up() {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("%s did not answer within 20s:\n%s", cmd.Path, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
