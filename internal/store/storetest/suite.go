// Package storetest is the conformance suite every artifact backend
// (store/dir, and S3 and GCS later) must pass, so the server can treat them
// as one: Run it from the backend's own tests with a func that opens an
// empty store.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/store"
)

// bigSize is the blob the atomicity tests write slowly: large enough that
// any backend streams it in many pieces.
const bigSize = 8 << 20

// pieceSize is how much the slow reader hands over between two looks of
// the concurrent reader.
const pieceSize = 64 << 10

var errBoom = errors.New("storetest: reader failed on purpose")

// Run runs the suite. open must return a new, empty store each call; it
// should register any cleanup with t.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"PutOpen", testPutOpen},
		{"OpenOffset", testOpenOffset},
		{"Missing", testMissing},
		{"Delete", testDelete},
		{"List", testList},
		{"Overwrite", testOverwrite},
		{"AtomicPut", testAtomicPut},
		{"AtomicOverwrite", testAtomicOverwrite},
		{"FailingReader", testFailingReader},
		{"ShortReader", testShortReader},
		{"Cancel", testCancel},
		{"InvalidKeys", testInvalidKeys},
		{"Multipart", testMultipart},
		{"Corrupt", testCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, open(t)) })
	}
}

func testPutOpen(t *testing.T, s store.Store) {
	for _, size := range []int{0, 1, 4096, 1<<20 + 7} {
		key := store.ArtifactKey("putopen", string(rune('a'+size%26)))
		want := random(t, size)
		put(t, s, key, want)
		if got := read(t, s, key, 0, int64(size)); !bytes.Equal(got, want) {
			t.Fatalf("Open(%s): read %d bytes that differ from the %d put", key, len(got), size)
		}
		n, err := s.Stat(t.Context(), key)
		if err != nil || n != int64(size) {
			t.Fatalf("Stat(%s) = %d, %v; want %d", key, n, err, size)
		}
	}
}

func testOpenOffset(t *testing.T, s store.Store) {
	ctx := t.Context()
	want := random(t, 10000)
	put(t, s, "sha256/offset", want)
	for _, off := range []int64{0, 1, 4096, 9999, 10000} {
		if got := read(t, s, "sha256/offset", off, 10000); !bytes.Equal(got, want[off:]) {
			t.Errorf("Open at %d: got %d bytes, want the %d-byte tail", off, len(got), len(want)-int(off))
		}
	}
	for _, off := range []int64{-1, 10001} {
		wantCode(t, fmt.Sprintf("Open at %d of 10000", off), openErr(ctx, s, "sha256/offset", off), ferry.EINVALID)
	}
}

func testMissing(t *testing.T, s store.Store) {
	ctx := t.Context()
	put(t, s, "sha256/present", []byte("x"))
	for _, key := range []string{"sha256/absent", "absent", "sha256/present/below"} {
		wantCodes(t, s, key, ferry.ENOTFOUND)
	}
	// "sha256" is only a directory to a file-backed store, not a key.
	_, err := s.Stat(ctx, "sha256")
	wantCode(t, "Stat(sha256)", err, ferry.ENOTFOUND)
}

func testDelete(t *testing.T, s store.Store) {
	ctx := t.Context()
	put(t, s, "sha256/a", []byte("a"))
	put(t, s, "sha256/b", []byte("b"))
	if err := s.Delete(ctx, "sha256/a"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	_, err := s.Stat(ctx, "sha256/a")
	wantCode(t, "Stat after Delete", err, ferry.ENOTFOUND)
	wantCode(t, "second Delete", s.Delete(ctx, "sha256/a"), ferry.ENOTFOUND)
	wantList(t, s, "", []string{"sha256/b"})
	// A deleted key can be written again.
	put(t, s, "sha256/a", []byte("again"))
	if got := read(t, s, "sha256/a", 0, 5); string(got) != "again" {
		t.Fatalf("after Delete and Put: %q", got)
	}
}

func testList(t *testing.T, s store.Store) {
	keys := []string{"sha256/ab", "sha256/aa", "sha256/b", "other/x/y", "top", "sha2560"}
	for _, k := range keys {
		put(t, s, k, []byte(k))
	}
	all := slices.Clone(keys)
	slices.Sort(all)
	wantList(t, s, "", all)
	wantList(t, s, "sha256/", []string{"sha256/aa", "sha256/ab", "sha256/b"})
	wantList(t, s, "sha256/a", []string{"sha256/aa", "sha256/ab"})
	wantList(t, s, "sha256", []string{"sha256/aa", "sha256/ab", "sha256/b", "sha2560"})
	wantList(t, s, "other/", []string{"other/x/y"})
	wantList(t, s, "t", []string{"top"})
	wantList(t, s, "nope/", nil)
	wantList(t, s, "sha256/z", nil)
}

func testOverwrite(t *testing.T, s store.Store) {
	put(t, s, "sha256/k", []byte("the old, longer content"))
	put(t, s, "sha256/k", []byte("new"))
	if got := read(t, s, "sha256/k", 0, 3); string(got) != "new" {
		t.Fatalf("after overwrite: %q", got)
	}
	wantList(t, s, "", []string{"sha256/k"})
}

// testAtomicPut looks at the key between every piece a slow reader hands
// to Put: before Put returns it must be absent, never partly there.
func testAtomicPut(t *testing.T, s store.Store) {
	want := random(t, bigSize)
	watchPut(t, s, "sha256/big", want, func(got []byte, err error) bool {
		if ferry.ErrorCode(err) == ferry.ENOTFOUND {
			return true
		}
		return err == nil && bytes.Equal(got, want)
	})
	if got := read(t, s, "sha256/big", 0, bigSize); !bytes.Equal(got, want) {
		t.Fatal("after Put: the blob differs from what was put")
	}
}

// testAtomicOverwrite: while a key is being replaced, readers see the old
// blob or the new one, whole.
func testAtomicOverwrite(t *testing.T, s store.Store) {
	// The old blob is small so that each look during the Put is cheap.
	old := random(t, 4096)
	put(t, s, "sha256/big", old)
	want := random(t, bigSize)
	watchPut(t, s, "sha256/big", want, func(got []byte, err error) bool {
		return err == nil && (bytes.Equal(got, old) || bytes.Equal(got, want))
	})
	if got := read(t, s, "sha256/big", 0, bigSize); !bytes.Equal(got, want) {
		t.Fatal("after overwrite: the blob differs from what was put")
	}
}

func testFailingReader(t *testing.T, s store.Store) {
	ctx := t.Context()
	data := random(t, 3<<20)
	r := io.MultiReader(bytes.NewReader(data[:1<<20]), errReader{errBoom})
	err := s.Put(ctx, "sha256/fail", r, int64(len(data)))
	if !errors.Is(err, errBoom) {
		t.Fatalf("Put from a failing reader: %v, want it to wrap the reader's error", err)
	}
	_, err = s.Stat(ctx, "sha256/fail")
	wantCode(t, "Stat after failed Put", err, ferry.ENOTFOUND)

	// A failed overwrite keeps the old blob.
	put(t, s, "sha256/keep", []byte("old"))
	r = io.MultiReader(bytes.NewReader(data[:1<<20]), errReader{errBoom})
	if err := s.Put(ctx, "sha256/keep", r, int64(len(data))); !errors.Is(err, errBoom) {
		t.Fatalf("overwrite from a failing reader: %v", err)
	}
	if got := read(t, s, "sha256/keep", 0, 3); string(got) != "old" {
		t.Fatalf("after failed overwrite: %q, want the old blob", got)
	}
	wantList(t, s, "", []string{"sha256/keep"})
}

func testShortReader(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, n := range []int{0, 50, 1<<20 + 1} {
		data := random(t, n)
		if err := s.Put(ctx, "sha256/short", bytes.NewReader(data), int64(n)+100); err == nil {
			t.Fatalf("Put of %d bytes declared as %d: no error", n, n+100)
		}
		_, err := s.Stat(ctx, "sha256/short")
		wantCode(t, "Stat after short Put", err, ferry.ENOTFOUND)
	}
	wantList(t, s, "", nil)
}

func testCancel(t *testing.T, s store.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	data := random(t, 4<<20)
	// The reader cancels halfway and then goes on producing: the store
	// must notice the cancel itself, not rely on the reader failing.
	r := &cancelReader{r: bytes.NewReader(data), at: 2 << 20, cancel: cancel}
	err := s.Put(ctx, "sha256/cancel", r, int64(len(data)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put cancelled midway: %v, want context.Canceled", err)
	}
	_, err = s.Stat(t.Context(), "sha256/cancel")
	wantCode(t, "Stat after cancelled Put", err, ferry.ENOTFOUND)

	err = s.Put(ctx, "sha256/cancel", bytes.NewReader(data), int64(len(data)))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a cancelled ctx: %v, want context.Canceled", err)
	}
	wantList(t, s, "", nil)
}

// testMultipart streams 50 MB from a reader that cannot seek, the size an
// S3 store uploads in parts, and reads it back whole and across a part
// boundary (5 MiB parts are the S3 minimum).
func testMultipart(t *testing.T, s store.Store) {
	const size = 50 << 20
	data := random(t, size)
	sum := sha256.Sum256(data)
	key := store.ArtifactKey("multi", hex.EncodeToString(sum[:]))
	if err := s.Put(t.Context(), key, struct{ io.Reader }{bytes.NewReader(data)}, size); err != nil {
		t.Fatalf("Put of %d bytes: %v", size, err)
	}
	if err := store.Verify(t.Context(), s, key, hex.EncodeToString(sum[:])); err != nil {
		t.Fatalf("Verify after Put: %v", err)
	}
	off := int64(5<<20 - 10)
	rc, n, err := s.Open(t.Context(), key, off)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := make([]byte, 20)
	if _, err := io.ReadFull(rc, got); err != nil || n != size || !bytes.Equal(got, data[off:off+20]) {
		t.Fatalf("20 bytes at %d of %d: %v, size %d, match %v", off, size, err, n, bytes.Equal(got, data[off:off+20]))
	}
}

// testCorrupt: an object whose bytes changed in the store after it was
// written is caught by its digest, not served as the artifact it names.
func testCorrupt(t *testing.T, s store.Store) {
	data := random(t, 1<<20)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	key := store.ArtifactKey("app", want)
	put(t, s, key, data)
	if err := store.Verify(t.Context(), s, key, want); err != nil {
		t.Fatalf("Verify of an intact object: %v", err)
	}
	bad := slices.Clone(data)
	bad[len(bad)/2] ^= 1
	put(t, s, key, bad)
	wantCode(t, "Verify of a flipped bit", store.Verify(t.Context(), s, key, want), ferry.ECORRUPT)
	put(t, s, key, data[:len(data)-1])
	wantCode(t, "Verify of a truncated object", store.Verify(t.Context(), s, key, want), ferry.ECORRUPT)
	// Another digest's key (not one that happens to start with 0 already).
	other := "0" + want[1:]
	if want[0] == '0' {
		other = "1" + want[1:]
	}
	wantCode(t, "Verify of a missing object", store.Verify(t.Context(), s, store.ArtifactKey("app", other), want), ferry.ENOTFOUND)
}

func testInvalidKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	for _, key := range []string{"", "../x", "/abs", "a/../../b", "..", ".", "a/..", "./a", "a//b", "a/", `a\..\b`} {
		err := s.Put(ctx, key, bytes.NewReader([]byte("x")), 1)
		wantCode(t, "Put("+key+")", err, ferry.EINVALID)
		wantCodes(t, s, key, ferry.EINVALID)
	}
	for _, prefix := range []string{"../", "/abs/", "a/../../"} {
		_, err := s.List(ctx, prefix)
		wantCode(t, "List("+prefix+")", err, ferry.EINVALID)
	}
	err := s.Put(ctx, "sha256/neg", bytes.NewReader(nil), -1)
	wantCode(t, "Put with size -1", err, ferry.EINVALID)
	wantList(t, s, "", nil)
}

// watchPut puts want under key from a reader that hands over one piece at
// a time, and between pieces reads key in full and asks ok about it. The
// two goroutines take turns, so every step of the Put is looked at without
// any sleeping.
func watchPut(t *testing.T, s store.Store, key string, want []byte, ok func([]byte, error) bool) {
	ctx := t.Context()
	turn := make(chan struct{})
	back := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		r := &steppedReader{data: want, turn: turn, back: back}
		done <- s.Put(ctx, key, r, int64(len(want)))
		close(turn)
	}()
	looks, failed := 0, false
	for range turn {
		// After the first bad look the rest would only repeat it.
		if !failed {
			got, err := readAll(ctx, s, key)
			if failed = !ok(got, err); failed {
				t.Errorf("during Put, look %d: read %d bytes, err %v", looks, len(got), err)
			}
		}
		looks++
		back <- struct{}{}
	}
	if err := <-done; err != nil {
		t.Fatalf("Put: %v", err)
	}
	if looks < len(want)/pieceSize {
		t.Fatalf("looked %d times during Put, want at least %d", looks, len(want)/pieceSize)
	}
}

// steppedReader yields at most pieceSize bytes a Read, each only after the
// watcher has had its turn.
type steppedReader struct {
	data       []byte
	turn, back chan struct{}
}

func (r *steppedReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	r.turn <- struct{}{}
	<-r.back
	n := copy(p[:min(len(p), pieceSize)], r.data)
	r.data = r.data[n:]
	return n, nil
}

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }

// cancelReader calls cancel once at bytes have been read.
type cancelReader struct {
	r      io.Reader
	read   int
	at     int
	cancel func()
}

func (r *cancelReader) Read(p []byte) (int, error) {
	if r.read >= r.at {
		r.cancel()
	}
	n, err := r.r.Read(p[:min(len(p), pieceSize)])
	r.read += n
	return n, err
}

func put(t *testing.T, s store.Store, key string, data []byte) {
	t.Helper()
	if err := s.Put(t.Context(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
}

// read opens key at offset, checks the size Open reports and returns the
// bytes from offset on.
func read(t *testing.T, s store.Store, key string, offset, size int64) []byte {
	t.Helper()
	rc, n, err := s.Open(t.Context(), key, offset)
	if err != nil {
		t.Fatalf("Open(%s, %d): %v", key, offset, err)
	}
	defer rc.Close()
	if n != size {
		t.Fatalf("Open(%s, %d): size %d, want the whole size %d", key, offset, n, size)
	}
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return b
}

// readAll reads key whole, and fails if the bytes do not match the size
// Open reported.
func readAll(ctx context.Context, s store.Store, key string) ([]byte, error) {
	rc, n, err := s.Open(ctx, key, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err == nil && int64(len(b)) != n {
		err = errors.New("storetest: read a different number of bytes than Open's size")
	}
	return b, err
}

// wantCodes checks that Open, Stat and Delete of key all fail with code.
func wantCodes(t *testing.T, s store.Store, key, code string) {
	t.Helper()
	ctx := t.Context()
	wantCode(t, "Open("+key+")", openErr(ctx, s, key, 0), code)
	_, err := s.Stat(ctx, key)
	wantCode(t, "Stat("+key+")", err, code)
	wantCode(t, "Delete("+key+")", s.Delete(ctx, key), code)
}

// openErr is Open's error, closing what it opened.
func openErr(ctx context.Context, s store.Store, key string, offset int64) error {
	rc, _, err := s.Open(ctx, key, offset)
	if err == nil {
		rc.Close()
	}
	return err
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if got := ferry.ErrorCode(err); got != code {
		t.Errorf("%s: err %v (%q), want %q", what, err, got, code)
	}
}

func wantList(t *testing.T, s store.Store, prefix string, want []string) {
	t.Helper()
	got, err := s.List(t.Context(), prefix)
	if err != nil {
		t.Fatalf("List(%q): %v", prefix, err)
	}
	if len(got) != 0 || len(want) != 0 {
		if !slices.Equal(got, want) {
			t.Errorf("List(%q) = %q, want %q", prefix, got, want)
		}
	}
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}
