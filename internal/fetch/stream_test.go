package fetch_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/fetch"
)

// collect is a consume function that reads the stream to its end, keeping
// every attempt's bytes.
type collect struct{ attempts [][]byte }

func (c *collect) consume(r io.Reader) error {
	b, err := io.ReadAll(r)
	c.attempts = append(c.attempts, b)
	return err
}

func TestStreamResumesOrRestarts(t *testing.T) {
	t.Parallel()
	body := payload(1 << 20)
	const half = 1 << 19
	tests := []struct {
		name       string
		honorRange bool
		wantCalls  int
		wantRanges []string
	}{
		{"server honours Range: one consume", true, 1, []string{"", fmt.Sprintf("bytes=%d-", half)}},
		{"server ignores Range: consume again from byte 0", false, 2, []string{"", fmt.Sprintf("bytes=%d-", half), ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var c counter
			srv := serve(t, func(w http.ResponseWriter, r *http.Request) {
				if c.see(r) == 1 {
					dropAfter(t, w, body, half)
					return
				}
				if tt.honorRange {
					http.ServeContent(w, r, "a.tar", time.Time{}, bytes.NewReader(body))
					return
				}
				w.Write(body)
			})
			var col collect
			res, err := fetch.NewRegistry().Stream(t.Context(), srv.URL+"/a.tar", fetch.Options{Retries: 2, Checksum: sha256Hex(body)}, col.consume)
			if err != nil {
				t.Fatal(err)
			}
			if len(col.attempts) != tt.wantCalls {
				t.Fatalf("consume called %d times, want %d", len(col.attempts), tt.wantCalls)
			}
			if last := col.attempts[len(col.attempts)-1]; !bytes.Equal(last, body) {
				t.Errorf("consume read %d bytes that differ from the body", len(last))
			}
			if res.Bytes != int64(len(body)) || res.SHA256 != sha256Hex(body) {
				t.Errorf("result = %+v", res)
			}
			if got := c.rangeHeaders(); !equal(got, tt.wantRanges) {
				t.Errorf("Range headers = %q, want %q", got, tt.wantRanges)
			}
		})
	}
}

// The bytes reach consume before they can be verified, so a mismatch must
// be an error from the last Read, never io.EOF.
func TestStreamChecksumMismatchFailsTheLastRead(t *testing.T) {
	t.Parallel()
	body := payload(300_000)
	srv := serve(t, func(w http.ResponseWriter, r *http.Request) { w.Write(body) })
	bad := sha256Hex([]byte("something else"))
	var lastErr error
	var n int
	_, err := fetch.NewRegistry().Stream(t.Context(), srv.URL, fetch.Options{Retries: 3, Checksum: bad}, func(r io.Reader) error {
		b, err := io.ReadAll(r)
		n, lastErr = len(b), err
		return err
	})
	if !errors.Is(err, fetch.ErrChecksum) || !errors.Is(lastErr, fetch.ErrChecksum) {
		t.Fatalf("Stream err = %v, last Read err = %v; want both to wrap ErrChecksum", err, lastErr)
	}
	if n != len(body) {
		t.Errorf("consume got %d bytes before the error, want all %d", n, len(body))
	}
}

func TestStreamConsumerErrors(t *testing.T) {
	t.Parallel()
	body := payload(2 << 20)
	reg := fetch.NewRegistry()
	reg["mem"] = memSource(body)
	opt := fetch.Options{Retries: 3, Checksum: sha256Hex(body)}

	// Stopping early without an error is a bug in consume: nothing verified.
	_, err := reg.Stream(t.Context(), "mem://x", opt, func(r io.Reader) error {
		_, err := io.ReadFull(r, make([]byte, 1000))
		return err
	})
	if !errors.Is(err, fetch.ErrIncomplete) {
		t.Fatalf("err = %v, want ErrIncomplete", err)
	}

	// consume's own failure is returned as it is, and not retried.
	calls := 0
	mine := errors.New("disk full")
	_, err = reg.Stream(t.Context(), "mem://x", opt, func(r io.Reader) error {
		calls++
		io.ReadFull(r, make([]byte, 1000))
		return fmt.Errorf("unpack: %w", mine)
	})
	if !errors.Is(err, mine) || calls != 1 {
		t.Fatalf("err = %v after %d calls, want consume's error after 1", err, calls)
	}

	// A checksum is required.
	if _, err := reg.Stream(t.Context(), "mem://x", fetch.Options{}, func(io.Reader) error { return nil }); err == nil {
		t.Fatal("streaming without a checksum succeeded")
	}
}
