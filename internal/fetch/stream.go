package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
)

// ErrIncomplete is returned by Stream when consume returned nil without
// reading the stream to its end, so the bytes were never verified.
var ErrIncomplete = errors.New("the consumer stopped before the end of the stream")

// Stream calls consume with a reader of the bytes at src, so they can be
// used while they arrive instead of after a download. opt.Checksum is
// required. The reader hashes what it yields and, at the end, returns an
// error wrapping ErrChecksum instead of io.EOF when the bytes do not match:
// consume must read to io.EOF, and act on nothing it read before that
// (Install unpacks into a staging directory and names the release only
// after its last Read).
//
// A connection that fails mid-body is reopened where it stopped when the
// source can resume (HTTP Range, files); when it cannot, the reader fails,
// and once consume has returned, Stream calls it again from the start.
// Both count against opt.Retries. Reading and hashing run on their own
// goroutine, a few chunks ahead of consume.
func (r Registry) Stream(ctx context.Context, src string, opt Options, consume func(io.Reader) error) (Result, error) {
	var res Result
	u, s, err := r.Parse(src)
	if err != nil {
		return res, err
	}
	if opt.Checksum == "" {
		return res, ferry.Errorf(ferry.EINVALID, "fetch %s: streaming needs a checksum", Redact(u))
	}
	sum, err := HashFor(strings.ToLower(opt.Checksum))
	if err != nil {
		return res, ferry.WrapError(ferry.EINVALID, err, "checksum")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	p := &producer{reg: r, src: s, u: u, opt: opt, sum: sum, wait: opt.RetryWait, left: max(opt.Retries, 0)}
	for {
		sr := p.start(ctx)
		err := consume(sr)
		final, seen := sr.stop()
		switch {
		case err == nil && seen && final == io.EOF:
			return p.res, nil
		case err == nil:
			return p.res, fmt.Errorf("fetch %s: %w", Redact(u), ErrIncomplete)
		case ctx.Err() != nil:
			return p.res, ctx.Err()
		case seen && errors.Is(final, errRestart) && p.left > 0:
			p.left--
			opt.Logger.Warn("download failed and cannot resume; starting again", "src", Redact(u), "retries_left", p.left, "err", final)
			if err := p.pause(ctx); err != nil {
				return p.res, err
			}
		default:
			return p.res, err // consume's own failure, or the stream's as consume saw it
		}
	}
}

// errRestart is the cause of a stream that failed and whose source cannot
// resume it: only a new consume from byte 0 can go on.
var errRestart = errors.New("cannot resume")

// producer reads the source for one Stream; its retry budget spans every
// consume call.
type producer struct {
	reg  Registry
	src  Source
	u    *url.URL
	opt  Options
	sum  hash.Hash
	h256 hash.Hash
	wait time.Duration
	left int
	res  Result
}

func (p *producer) pause(ctx context.Context) error {
	if err := sleep(ctx, p.wait); err != nil {
		return err
	}
	if p.opt.Backoff {
		p.wait = min(p.wait*2, time.Minute)
	}
	return nil
}

const (
	streamChunk  = 64 << 10
	streamChunks = 4
)

type chunk struct {
	b   []byte
	err error // after b: io.EOF once verified, or why the stream ended
}

// streamReader is what consume reads: chunks filled by the producer.
type streamReader struct {
	cancel context.CancelFunc
	full   chan chunk
	free   chan []byte
	done   chan struct{}
	cur    chunk
	off    int
	final  error // the producer's last word, set before done closes
}

func (p *producer) start(ctx context.Context) *streamReader {
	ctx, cancel := context.WithCancel(ctx)
	sr := &streamReader{cancel: cancel, full: make(chan chunk, streamChunks), free: make(chan []byte, streamChunks), done: make(chan struct{})}
	for range streamChunks {
		sr.free <- make([]byte, streamChunk)
	}
	p.res = Result{}
	p.sum.Reset()
	p.h256 = p.sum // one sha256 serves both when the checksum is one
	if p.sum.Size() != sha256.Size {
		p.h256 = sha256.New()
	}
	go func() {
		defer close(sr.done)
		sr.final = p.run(ctx, sr)
		select {
		case sr.full <- chunk{err: sr.final}:
		case <-ctx.Done():
		}
	}()
	return sr
}

// run reads the source into chunks until its end, resuming after a failed
// connection where the source allows it.
func (p *producer) run(ctx context.Context, sr *streamReader) error {
	for {
		err := p.attempt(ctx, sr)
		if err == nil {
			p.res.SHA256 = hex.EncodeToString(p.h256.Sum(nil))
			p.res.Sum = hex.EncodeToString(p.sum.Sum(nil))
			if p.res.Sum != strings.ToLower(p.opt.Checksum) {
				return ferry.WrapError(ferry.EINVALID, ErrChecksum,
					"fetch %s: expected %s, got %s (%d bytes); the file there is not the one the checksum names", Redact(p.u), p.opt.Checksum, p.res.Sum, p.res.Bytes)
			}
			return io.EOF
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, errRestart) || p.left == 0 {
			return fmt.Errorf("fetch %s: %w", Redact(p.u), err)
		}
		p.left--
		p.opt.Logger.Warn("download failed; resuming", "src", Redact(p.u), "at", p.res.Bytes, "retries_left", p.left, "err", err)
		if err := p.pause(ctx); err != nil {
			return err
		}
	}
}

func (p *producer) attempt(ctx context.Context, sr *streamReader) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rc, resumed, err := p.src.Open(ctx, p.u, p.res.Bytes)
	if err != nil {
		return err
	}
	defer rc.Close()
	if p.res.Bytes > 0 && !resumed {
		return fmt.Errorf("%w: the source sent byte 0 again", errRestart)
	}
	var rd io.Reader = ctxReader{ctx, rc}
	var ir *idleReader
	if p.opt.IdleTimeout > 0 {
		ir = newIdleReader(rd, p.opt.IdleTimeout, cancel)
		defer ir.stop()
		rd = ir
	}
	if p.opt.MaxBandwidth > 0 {
		rd = NewLimitedReader(ctx, rd, p.opt.MaxBandwidth)
	}
	for {
		var b []byte
		select {
		case b = <-sr.free:
		default:
			// consume is behind: waiting for it is not the source being idle.
			if ir != nil {
				ir.timer.Stop()
			}
			select {
			case b = <-sr.free:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
			if ir != nil {
				ir.timer.Reset(ir.d)
			}
		}
		n, err := fill(rd, b)
		if n > 0 {
			p.h256.Write(b[:n])
			if p.sum != p.h256 {
				p.sum.Write(b[:n])
			}
			p.res.Bytes += int64(n)
			sr.full <- chunk{b: b[:n]} // never blocks: as many slots as buffers
		} else {
			sr.free <- b
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
				return cause
			}
			return err
		}
	}
}

// fill reads into b until it is full or r fails. Unlike io.ReadFull it
// passes io.ErrUnexpectedEOF through as it is: an HTTP body says so when it
// ends before its Content-Length, and that is a failure, not the end.
func fill(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func (sr *streamReader) Read(b []byte) (int, error) {
	for sr.off == len(sr.cur.b) {
		if sr.cur.err != nil {
			return 0, sr.cur.err
		}
		if sr.cur.b != nil {
			sr.free <- sr.cur.b[:cap(sr.cur.b)]
		}
		sr.off = 0
		select {
		case sr.cur = <-sr.full:
		case <-sr.done:
			// Everything the producer sent is in full by now; after that,
			// its last word (it may have stopped without sending it).
			select {
			case sr.cur = <-sr.full:
			default:
				sr.cur = chunk{err: sr.final}
				if sr.cur.err == nil {
					sr.cur.err = io.ErrUnexpectedEOF
				}
			}
		}
	}
	n := copy(b, sr.cur.b[sr.off:])
	sr.off += n
	return n, nil
}

// stop ends the producer and returns how the stream ended, and whether
// consume saw that end: io.EOF once read to the end and verified.
func (sr *streamReader) stop() (final error, seen bool) {
	sr.cancel()
	<-sr.done
	return sr.final, sr.cur.err != nil
}
