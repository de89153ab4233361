package client_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/client"
	"github.com/ferrydeploy/ferry/client/clienttest"
	"github.com/ferrydeploy/ferry/internal/artifact"
)

// countedFile is an artifact file that counts the bytes read from it.
type countedFile struct {
	f    *os.File
	read *atomic.Int64
}

func (c countedFile) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.read.Add(int64(n))
	return n, err
}
func (c countedFile) Seek(off int64, whence int) (int64, error) { return c.f.Seek(off, whence) }
func (c countedFile) Close() error                              { return c.f.Close() }
func (c countedFile) Stat() (fs.FileInfo, error)                { return c.f.Stat() }

// TestUploadReadsTheFileOnce: publishing reads the artifact once for its
// digest and app, and once more to send it only when the server lacks it.
func TestUploadReadsTheFileOnce(t *testing.T) {
	srv := clienttest.StartServer(t)
	c := clienttest.Client(t, srv, srv.AdminToken())
	// meta.json first, then more than a read buffer of noise: the digest
	// must cover the bytes after the point where meta.json was found.
	noise := make([]byte, 300_000)
	rand.Read(noise)
	var b bytes.Buffer
	err := artifact.Pack(&b, []artifact.Entry{
		{Name: ".ferry", Dir: true},
		{Name: ferry.MetaPath, Data: []byte(`{"app":"hello","version":"v1.0.0"}`)},
		{Name: "noise", Data: noise},
	}, artifact.FormatZstd, time.Unix(1_700_000_000, 0))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hello-v1.0.0.tar.zst")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	var read atomic.Int64
	client.SetOpenArtifact(t, func(name string) (client.ArtifactFile, error) {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		return countedFile{f, &read}, nil
	})
	for _, tc := range []struct {
		what    string
		existed bool
		passes  int64
	}{
		{"a new artifact", false, 2},            // hashed, then sent
		{"an artifact the server has", true, 1}, // hashed only
	} {
		read.Store(0)
		a, err := c.UploadArtifact(t.Context(), path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if a.Existed != tc.existed || a.App != "hello" || a.Version != "v1.0.0" || a.SHA256 != fmt.Sprintf("%x", sha256.Sum256(b.Bytes())) {
			t.Errorf("%s: %+v", tc.what, a)
		}
		if n := read.Load(); n != tc.passes*fi.Size() {
			t.Errorf("%s: %d bytes read of a %d-byte file, want %d passes", tc.what, n, fi.Size(), tc.passes)
		}
	}
}
