package desired

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// DefaultPoll is how often Watch asks a URL whether the document changed.
const DefaultPoll = 30 * time.Second

// maxDocBytes bounds what Watch reads, so a wrong URL (a large file, an
// endless stream) costs an error, not the agent's memory.
const maxDocBytes = 16 << 20

// Options tune Watch. The zero value is ready to use.
type Options struct {
	Poll   time.Duration // URL poll interval; default DefaultPoll
	Client *http.Client  // for http(s) URLs; default has a 30s timeout
	Logger *slog.Logger
}

// Watch reads the document at loc (a file path, file:// URL, or http(s)
// URL), calls fn with it, and calls fn again each time it changes, until ctx
// is done; then it returns nil, since cancellation is how it is meant to end.
// It returns an error at once only for a loc it can never read.
//
// A read or parse error calls fn(nil, err) and Watch keeps watching: the
// caller keeps running its last good document. fn is not called again for
// the same bytes, nor for the same error twice in a row; after an error, the
// next good document is passed to fn even when it equals the last good one,
// so the caller learns that the error is over. fn is called from Watch's
// goroutine, one call at a time; Watch does not read while fn runs.
//
// Files are watched with inotify on their directory, so replacing the file
// by rename (as editors and atomic writers do) is seen within a few tens of
// milliseconds; a stat every few seconds covers the cases inotify misses (it
// is unavailable, or the directory itself is replaced). URLs are polled
// every opt.Poll with If-None-Match and If-Modified-Since, so an unchanged
// document costs one 304.
func Watch(ctx context.Context, loc string, opt Options, fn func(*Doc, error)) error {
	if opt.Poll <= 0 {
		opt.Poll = DefaultPoll
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if loc == "" {
		return ferry.Errorf(ferry.EINVALID, "desired state: no file or URL given")
	}
	u, err := url.Parse(loc)
	switch {
	case err != nil || u.Scheme == "" || len(u.Scheme) == 1: // a plain path, or C:\…
		return watchFile(ctx, loc, opt, &reporter{fn: fn, loc: loc})
	case u.Scheme == "file":
		p := u.Path
		if u.Host != "" && u.Host != "localhost" { // file://relative/path, as fetch reads it
			p = u.Host + u.Path
		}
		return watchFile(ctx, p, opt, &reporter{fn: fn, loc: loc})
	case u.Scheme == "http" || u.Scheme == "https":
		return watchURL(ctx, u, opt, &reporter{fn: fn, loc: fetch.Redact(u)})
	}
	return ferry.Errorf(ferry.EINVALID, "desired state %s: scheme %q is not supported (use a path, file://, http:// or https://)", fetch.Redact(u), u.Scheme)
}

// reporter decides which reads reach fn: changed bytes, and errors that
// differ from the one reported last.
type reporter struct {
	fn      func(*Doc, error)
	loc     string
	ok      bool   // the last call to fn was a document
	last    []byte // the bytes of the last document passed to fn
	lastErr string // the last error passed to fn, while !ok
}

// bytes parses b and passes it on unless fn already has it.
func (r *reporter) bytes(b []byte) {
	if r.ok && bytes.Equal(b, r.last) {
		return
	}
	d, err := Parse(b)
	if err != nil {
		r.fail(fmt.Errorf("%s: %w", r.loc, err))
		return
	}
	r.ok, r.last, r.lastErr = true, bytes.Clone(b), ""
	r.fn(d, nil)
}

// fail passes err on unless it is the error fn was last given.
func (r *reporter) fail(err error) {
	if !r.ok && r.lastErr == err.Error() {
		return
	}
	r.ok, r.lastErr = false, err.Error()
	r.fn(nil, err)
}

// readAll reads at most maxDocBytes.
func readAll(rd io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(rd, maxDocBytes+1))
	if err == nil && len(b) > maxDocBytes {
		return nil, fmt.Errorf("larger than %d MiB; a desired-state document is small", maxDocBytes>>20)
	}
	return b, err
}
