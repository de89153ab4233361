package blob_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/store"
	"github.com/ferrydeploy/ferry/store/blob"
	"github.com/ferrydeploy/ferry/store/storetest"
)

// startFakeGCS runs fake-gcs-server (github.com/fsouza/fake-gcs-server, an
// emulator of GCS's JSON API, which the Go storage client reaches through
// STORAGE_EMULATOR_HOST) on loopback and returns its host:port. Without the
// binary the test skips, except under CI, where it fails:
// scripts/install-deps.sh builds it.
func startFakeGCS(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("fake-gcs-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("fake-gcs-server is not installed: run scripts/install-deps.sh")
		}
		t.Skip("fake-gcs-server is not installed (scripts/install-deps.sh builds it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", port,
		"-backend", "filesystem", "-filesystem-root", t.TempDir(),
		"-external-url", "http://"+addr, "-public-host", addr, "-log-level", "warn")
	log, _ := os.Create(t.TempDir() + "/fake-gcs.log")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); log.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/storage/v1/b?project=test")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(log.Name())
			t.Fatalf("fake-gcs-server did not answer on %s within 20s:\n%s", addr, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr
}

func createGCSBucket(t *testing.T, addr, name string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/storage/v1/b?project=test", "application/json",
		bytes.NewReader([]byte(`{"name":`+strconv.Quote(name)+`}`)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create bucket %s: %s", name, resp.Status)
	}
}

// TestGCS runs the conformance suite on gs:// buckets of a GCS emulator,
// through a key prefix as --store gs://bucket/prefix would.
func TestGCS(t *testing.T) {
	addr := startFakeGCS(t)
	t.Setenv("STORAGE_EMULATOR_HOST", addr)
	n := 0
	storetest.Run(t, func(t *testing.T) store.Store {
		n++
		bucket := fmt.Sprintf("ferry-gcs-%d", n)
		createGCSBucket(t, addr, bucket)
		s, err := blob.Open(context.Background(), "gs://"+bucket+"/artifacts")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
