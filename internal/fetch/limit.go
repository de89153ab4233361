package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// limitedReader paces reads to a byte rate with a token bucket that holds
// at most a quarter second of credit, so bursts stay short.
type limitedReader struct {
	ctx    context.Context
	r      io.Reader
	rate   float64 // bytes per second
	tokens float64
	last   time.Time
}

// NewLimitedReader returns a reader that yields at most rate bytes per
// second on average.
func NewLimitedReader(ctx context.Context, r io.Reader, rate int64) io.Reader {
	return &limitedReader{ctx: ctx, r: r, rate: float64(rate), last: time.Now()}
}

func (l *limitedReader) Read(p []byte) (int, error) {
	burst := max(l.rate/4, 1)
	if float64(len(p)) > burst {
		p = p[:int(burst)]
	}
	for {
		now := time.Now()
		l.tokens = min(l.tokens+now.Sub(l.last).Seconds()*l.rate, burst)
		l.last = now
		if l.tokens >= float64(len(p)) || l.tokens >= burst {
			break
		}
		need := (float64(len(p)) - l.tokens) / l.rate
		if err := sleep(l.ctx, time.Duration(need*float64(time.Second))); err != nil {
			return 0, err
		}
	}
	n, err := l.r.Read(p)
	l.tokens -= float64(n)
	return n, err
}

// errIdle is the cause given when an attempt receives nothing for too long.
var errIdle = errors.New("no data received")

// idleReader cancels the attempt when no Read returns data for d.
type idleReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func newIdleReader(r io.Reader, d time.Duration, cancel context.CancelCauseFunc) *idleReader {
	t := time.AfterFunc(d, func() { cancel(fmt.Errorf("%w for %s", errIdle, d)) })
	return &idleReader{r: r, timer: t, d: d}
}

func (i *idleReader) Read(p []byte) (int, error) {
	n, err := i.r.Read(p)
	if n > 0 {
		i.timer.Reset(i.d)
	}
	if err != nil {
		i.timer.Stop()
	}
	return n, err
}

// stop releases the timer when the copy ends on a write error, which the
// reader never sees.
func (i *idleReader) stop() { i.timer.Stop() }
