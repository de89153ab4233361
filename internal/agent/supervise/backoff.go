package supervise

import (
	"math/rand/v2"
	"time"
)

// Backoff is how long an instance waits before each restart after a crash:
// Initial doubling up to Max, ±Jitter of itself, and back to Initial once a
// run has lasted Reset. It never gives up: a crash-looping app that gets
// fixed (a file appears, a dependency comes back) recovers on its own.
type Backoff struct {
	Initial time.Duration
	Max     time.Duration
	Jitter  float64 // fraction, e.g. 0.25 for ±25%
	Reset   time.Duration
}

// DefaultBackoff is DESIGN.md's schedule: 1 s doubling to 60 s, ±25%.
var DefaultBackoff = Backoff{Initial: time.Second, Max: time.Minute, Jitter: 0.25, Reset: 10 * time.Second}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoff.Initial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoff.Max
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Reset <= 0 {
		b.Reset = DefaultBackoff.Reset
	}
	return b
}

// Delay is the wait before restart number attempt (1 after the first crash).
func (b Backoff) Delay(attempt int) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 1; i < attempt && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	if b.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + b.Jitter*(2*rand.Float64()-1)))
	}
	return d
}
