package proxy

import (
	"bytes"
	"context"
	"errors"
	"log"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"
)

// What the proxy counts per backend in its error log.
const (
	evRetried   = "retried"    // a try failed and the request went to another backend
	evFailed    = "failed"     // answered 502: no other backend to try
	evNoBackend = "no_backend" // answered 503: none in rotation
	evHTTP      = "http"       // a line of net/http's own (accept errors, body copy errors)
)

const defaultErrorLogEvery = time.Second

// errorLog folds the proxy's error lines into at most one line per backend
// per interval, with counts: during an outage every request fails, and a
// line or two each filled the agent's log with 12 MB in 6 s. The first
// error of a quiet backend is logged at once, as it happens; what follows
// within the interval is counted, and summed up in one line when the
// interval ends, while errors go on.
type errorLog struct {
	log   *slog.Logger
	every time.Duration

	mu     sync.Mutex
	open   map[string]*tally // by backend address; "" for the proxy itself
	closed bool
}

type tally struct {
	counts map[string]int
	last   string // the last error, as an example
	timer  *time.Timer
}

func newErrorLog(l *slog.Logger, every time.Duration) *errorLog {
	if every <= 0 {
		every = defaultErrorLogEvery
	}
	return &errorLog{log: l, every: every, open: map[string]*tally{}}
}

// note records one event at backend; attrs describe it (method, path).
func (l *errorLog) note(backend, what string, level slog.Level, msg string, err error, attrs ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if t := l.open[backend]; t != nil {
		t.counts[what]++
		if err != nil {
			t.last = err.Error()
		}
		return
	}
	l.open[backend] = &tally{counts: map[string]int{}, timer: time.AfterFunc(l.every, func() { l.flush(backend) })}
	args := attrs
	if backend != "" {
		args = append(args, keyBackend, backend)
	}
	if err != nil {
		args = append(args, keyErr, err)
	}
	l.log.Log(context.Background(), level, msg, args...)
}

// flush writes backend's summary line, if anything happened since the
// last, and keeps counting for another interval; a quiet interval ends the
// tally, so the next error is logged at once again.
func (l *errorLog) flush(backend string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.open[backend]
	if t == nil {
		return
	}
	if len(t.counts) == 0 {
		delete(l.open, backend)
		return
	}
	l.summary(backend, t)
	t.counts, t.last = map[string]int{}, ""
	if !l.closed {
		t.timer.Reset(l.every)
	}
}

// summary writes t's line. The caller holds l.mu.
func (l *errorLog) summary(backend string, t *tally) {
	level := slog.LevelWarn
	if t.counts[evFailed]+t.counts[evNoBackend] > 0 {
		level = slog.LevelError
	}
	args := []any{"interval", l.every}
	if backend != "" {
		args = append(args, keyBackend, backend)
	}
	for _, k := range slices.Sorted(maps.Keys(t.counts)) {
		args = append(args, k, t.counts[k])
	}
	if t.last != "" {
		args = append(args, "last_err", t.last)
	}
	l.log.Log(context.Background(), level, "proxy errors since the last line", args...)
}

// close writes what is still counted and stops counting.
func (l *errorLog) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	l.closed = true
	for _, b := range slices.Sorted(maps.Keys(l.open)) {
		t := l.open[b]
		t.timer.Stop()
		if len(t.counts) > 0 {
			l.summary(b, t)
		}
	}
	clear(l.open)
}

// stdLogger is a *log.Logger for net/http's ErrorLog fields whose lines
// are folded as evHTTP events of backend.
func (l *errorLog) stdLogger(backend string) *log.Logger {
	return log.New(lineWriter(func(line []byte) {
		l.note(backend, evHTTP, slog.LevelWarn, "net/http", errors.New(string(bytes.TrimSpace(line))))
	}), "", 0)
}

type lineWriter func([]byte)

func (w lineWriter) Write(b []byte) (int, error) {
	w(b)
	return len(b), nil
}
