// Package fetch downloads the bytes at a URL into a file: retried, resumed
// with HTTP Range after a dropped connection, rate limited, and verified by
// digest while streaming. Sources are picked by URL scheme from a Registry,
// so stores such as S3 and GCS plug in beside file and http(s).
package fetch

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
)

// Source opens the bytes at u from offset on. resumed is false when the
// source ignored the offset and starts again from byte 0.
//
// Errors: a *StatusError when the server answered but not with the bytes;
// *os.PathError for a missing file; anything else is a transport error.
// All are retried by Download.
type Source interface {
	Open(ctx context.Context, u *url.URL, offset int64) (rc io.ReadCloser, resumed bool, err error)
}

// Registry maps URL schemes to sources. An explicit registry, not init()
// side effects: callers add the schemes they wire in.
type Registry map[string]Source

// NewRegistry returns a registry with file and http(s).
func NewRegistry() Registry {
	h := NewHTTP()
	return Registry{"file": File{}, "http": h, "https": h}
}

// Parse turns a src (URL or plain path) into a URL and its Source.
func (r Registry) Parse(src string) (*url.URL, Source, error) {
	if src == "" {
		return nil, nil, ferry.Errorf(ferry.EINVALID, "empty source URL")
	}
	u, err := url.Parse(src)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // C:\ or a plain path
		return &url.URL{Scheme: "file", Path: src}, r["file"], nil
	}
	s, ok := r[strings.ToLower(u.Scheme)]
	if !ok {
		schemes := slices.Sorted(maps.Keys(r))
		return nil, nil, ferry.Errorf(ferry.EINVALID, "source %s: scheme %q is not supported (use %s://)", Redact(u), u.Scheme, strings.Join(schemes, "://, "))
	}
	return u, s, nil
}

// Options tune Download. The zero value tries once, with no limits.
type Options struct {
	Retries      int           // further attempts after the first
	RetryWait    time.Duration // wait between attempts
	Backoff      bool          // double the wait after each attempt, to 60s
	MaxBandwidth int64         // bytes per second; 0 is unlimited
	Splay        time.Duration // wait a random time up to this before starting, so a fleet does not start at once
	IdleTimeout  time.Duration // an attempt with no bytes for this long fails
	Checksum     string        // hex digest; md5, sha1, sha256 or sha512 by length
	Logger       *slog.Logger
}

// Result is what Download wrote.
type Result struct {
	Bytes  int64
	SHA256 string // always computed
	Sum    string // the digest of the algorithm Checksum named
}

// ErrChecksum is wrapped when the downloaded bytes do not match.
var ErrChecksum = errors.New("checksum mismatch")

// HashFor returns the hash whose hex digest is as long as checksum.
func HashFor(checksum string) (hash.Hash, error) {
	// Checked digit by digit, not with hex.DecodeString, which calls an odd
	// length "not hexadecimal" and hides the length message below.
	if strings.IndexFunc(checksum, func(r rune) bool {
		return !('0' <= r && r <= '9' || 'a' <= r && r <= 'f' || 'A' <= r && r <= 'F')
	}) >= 0 {
		return nil, fmt.Errorf("checksum %q is not hexadecimal", checksum)
	}
	switch len(checksum) {
	case 32:
		return md5.New(), nil
	case 40:
		return sha1.New(), nil
	case 64:
		return sha256.New(), nil
	case 128:
		return sha512.New(), nil
	}
	return nil, fmt.Errorf("checksum %q has %d hex digits; md5 has 32, sha1 40, sha256 64, sha512 128", checksum, len(checksum))
}

// Download writes the bytes at src into f (truncating it), resuming where a
// failed attempt stopped when the source allows it, and verifies them.
// Cancelling ctx stops it at once with ctx's error.
func (r Registry) Download(ctx context.Context, src string, f *os.File, opt Options) (Result, error) {
	var res Result
	u, s, err := r.Parse(src)
	if err != nil {
		return res, err
	}
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var sum hash.Hash
	if opt.Checksum != "" {
		if sum, err = HashFor(strings.ToLower(opt.Checksum)); err != nil {
			return res, ferry.WrapError(ferry.EINVALID, err, "checksum")
		}
	}
	h256 := sha256.New()
	if len(opt.Checksum) == 64 {
		sum = h256 // one sha256 serves both: hashing is most of a download's CPU
	}
	reset := func() error {
		h256.Reset()
		if sum != nil {
			sum.Reset()
		}
		res.Bytes = 0
		if err := f.Truncate(0); err != nil {
			return err
		}
		_, err := f.Seek(0, io.SeekStart)
		return err
	}
	if err := reset(); err != nil {
		return res, err
	}
	if opt.Splay > 0 {
		if err := sleep(ctx, rand.N(opt.Splay)); err != nil {
			return res, err
		}
	}
	wait := opt.RetryWait
	retries := max(opt.Retries, 0) // a negative count must still try once, not succeed with nothing
	var lastErr error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			log.Warn("download failed; retrying", "src", Redact(u), "attempt", attempt, "of", retries, "wait", wait, "err", lastErr)
			if err := sleep(ctx, wait); err != nil {
				return res, err
			}
			if opt.Backoff {
				wait = min(wait*2, time.Minute)
			}
		}
		lastErr = r.attempt(ctx, s, u, f, &res, uniqueHashes(h256, sum), opt, reset)
		if lastErr == nil {
			break
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
	}
	if lastErr != nil {
		return res, fmt.Errorf("fetch %s: %w", Redact(u), lastErr)
	}
	res.SHA256 = hex.EncodeToString(h256.Sum(nil))
	if sum != nil {
		res.Sum = hex.EncodeToString(sum.Sum(nil))
		if res.Sum != strings.ToLower(opt.Checksum) {
			return res, ferry.WrapError(ferry.EINVALID, ErrChecksum,
				"fetch %s: expected %s, got %s (%d bytes); the file there is not the one the checksum names", Redact(u), opt.Checksum, res.Sum, res.Bytes)
		}
	}
	return res, nil
}

func (r Registry) attempt(ctx context.Context, s Source, u *url.URL, f *os.File, res *Result, hs []hash.Hash, opt Options, reset func() error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rc, resumed, err := s.Open(ctx, u, res.Bytes)
	if err != nil {
		return err
	}
	defer rc.Close()
	if res.Bytes > 0 && !resumed {
		if err := reset(); err != nil {
			return err
		}
	}
	// Sources such as File do not watch ctx themselves.
	var rd io.Reader = ctxReader{ctx, rc}
	if opt.IdleTimeout > 0 {
		ir := newIdleReader(rd, opt.IdleTimeout, cancel)
		defer ir.stop()
		rd = ir
	}
	if opt.MaxBandwidth > 0 {
		rd = NewLimitedReader(ctx, rd, opt.MaxBandwidth)
	}
	n, err := io.Copy(&digestWriter{f: f, hs: hs}, rd)
	res.Bytes += n
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// ctxReader fails reads once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// digestWriter writes to f and hashes exactly the bytes f took. An
// io.MultiWriter would skip the hashes after a short write to f while
// io.Copy still counts those bytes, so a resumed download would hash a
// file with a hole in it.
type digestWriter struct {
	f  io.Writer
	hs []hash.Hash
}

func (w *digestWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	for _, h := range w.hs { // uniqueHashes has dropped nils
		h.Write(p[:n])
	}
	return n, err
}

// Redact drops a URL's password and query (which may hold a signature or
// a token), for messages and logs.
func Redact(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		c.RawQuery = "…"
	}
	return c.String()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Sleep waits d or until ctx is done, returning ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error { return sleep(ctx, d) }

// uniqueHashes drops nils and repeats, so no hash sees the bytes twice.
func uniqueHashes(hs ...hash.Hash) []hash.Hash {
	var out []hash.Hash
	for _, h := range hs {
		if h != nil && (len(out) == 0 || out[len(out)-1] != h) {
			out = append(out, h)
		}
	}
	return out
}
