package dir

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrydeploy/ferry/internal/store"
	"github.com/ferrydeploy/ferry/internal/store/storetest"
)

func TestSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := New(filepath.Join(t.TempDir(), "artifacts"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestLayout pins where blobs live on disk: operators back DIR/artifacts
// up and look into it, so the layout is part of the contract.
func TestLayout(t *testing.T) {
	root := t.TempDir()
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	key := store.ArtifactKey("hello", "ab12")
	if err := s.Put(t.Context(), key, bytes.NewReader([]byte("blob")), 4); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "artifacts", "hello", "ab12.tar.zst"))
	if err != nil || string(got) != "blob" {
		t.Fatalf("root/artifacts/hello/ab12.tar.zst: %q, %v", got, err)
	}
	entries, err := os.ReadDir(filepath.Join(root, "artifacts", "hello"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("root/artifacts/hello holds %v, %v; want only the blob, no temp files", entries, err)
	}
}

// TestListSkipsTemp: a Put in flight leaves a dot-named temp file that
// List must not report as a key.
func TestListSkipsTemp(t *testing.T) {
	root := t.TempDir()
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sha256", ".x.tmp-1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	keys, err := s.List(t.Context(), "")
	if err != nil || len(keys) != 0 {
		t.Fatalf("List = %q, %v; want none", keys, err)
	}
}

func TestNewEmptyRoot(t *testing.T) {
	if _, err := New(""); err == nil {
		t.Fatal("New(\"\"): no error")
	}
}
