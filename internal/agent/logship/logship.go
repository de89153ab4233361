// Package logship answers the control server's requests for an app's
// process logs on this host: it long-polls the server for them and streams
// the lines of the instances' log files (logfile.Tail) back, until they
// end or, when following, until the server says the reader went away.
package logship

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/agent/logfile"
	"github.com/ferrydeploy/ferry/internal/fetch"
)

// Server is the control server as the agent's client reaches it.
type Server interface {
	LogRequests(ctx context.Context, wait time.Duration) ([]api.LogRequest, error)
	SendLogs(ctx context.Context, id string, r io.Reader) error
}

// Serve answers log requests for the apps under appsDir
// (appsDir/<app>/logs/<process>.<n>.log) until ctx is done. log may be
// nil.
func Serve(ctx context.Context, srv Server, appsDir string, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	failures := 0
	for ctx.Err() == nil {
		reqs, err := srv.LogRequests(ctx, time.Minute)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			wait := min(time.Second<<min(failures-1, 5), 30*time.Second)
			log.Debug("log requests", "err", err, "retry_in", wait)
			fetch.Sleep(ctx, wait+rand.N(wait/4+1))
			continue
		}
		failures = 0
		for _, rq := range reqs {
			go func() {
				if err := Answer(ctx, srv, appsDir, rq); err != nil && ctx.Err() == nil {
					log.Warn("log request", "app", rq.App, "process", rq.Process, "err", err)
				}
			}()
		}
	}
}

// Answer streams the lines rq asks for to the server.
func Answer(parent context.Context, srv Server, appsDir string, rq api.LogRequest) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	pr, pw := io.Pipe()
	sent := make(chan error, 1)
	go func() {
		err := srv.SendLogs(ctx, rq.ID, pr)
		pr.CloseWithError(io.ErrClosedPipe) // the server stopped reading: stop tailing
		cancel()
		sent <- err
	}()
	out := &encoder{w: pw}
	err := tail(ctx, appsDir, rq, out)
	if err != nil && ctx.Err() == nil {
		out.send(api.LogLine{Error: err.Error()})
	}
	pw.Close()
	// The upload's end cancelled ctx: only parent's says its error is
	// no news.
	if serr := <-sent; serr != nil && parent.Err() == nil {
		return serr
	}
	return nil
}

func tail(ctx context.Context, appsDir string, rq api.LogRequest, out *encoder) error {
	// The names go into a path and a glob: ferry's rules keep them one
	// plain path element.
	if err := ferry.CheckAppName(rq.App); err != nil {
		return fmt.Errorf("app: %w", err)
	}
	if rq.Process != "" {
		if err := ferry.CheckProcessName(rq.Process); err != nil {
			return fmt.Errorf("process: %w", err)
		}
	}
	pattern := "*.*.log" // PROCESS.N.log
	if rq.Process != "" {
		pattern = rq.Process + ".*.log"
	}
	paths, _ := filepath.Glob(filepath.Join(appsDir, rq.App, "logs", pattern))
	what := rq.App
	if rq.Process != "" {
		what += " " + rq.Process
	}
	if rq.Hooks {
		paths, what = nil, "hooks of "+rq.App
		if p := filepath.Join(appsDir, rq.App, HookLog); fileExists(p) {
			paths = []string{p}
		}
	}
	if len(paths) == 0 {
		return fmt.Errorf("no logs of %s on this host", what)
	}
	n := rq.Lines
	var cutoff time.Time
	if rq.Since > 0 {
		cutoff = time.Now().Add(-rq.Since)
		if n == 0 {
			n = -1
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, len(paths))
	for i, p := range paths {
		instance := strings.TrimSuffix(filepath.Base(p), ".log")
		if rq.Hooks {
			instance = api.HooksInstance
		}
		w := &lineWriter{instance: instance, cutoff: cutoff, out: out}
		if !rq.Follow {
			if err := logfile.Tail(ctx, p, n, false, w); err != nil {
				return err
			}
			continue
		}
		wg.Go(func() { errs[i] = logfile.Tail(ctx, p, n, true, w) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

// encoder writes LogLines as NDJSON; several instances' writers share it.
type encoder struct {
	mu sync.Mutex
	w  io.Writer
}

func (e *encoder) send(l api.LogLine) error {
	b, _ := json.Marshal(l)
	e.mu.Lock()
	defer e.mu.Unlock()
	_, err := e.w.Write(append(b, '\n'))
	return err
}

// lineWriter cuts one instance's log into lines, drops those older than
// cutoff (each starts with its RFC 3339 time) and sends the rest.
type lineWriter struct {
	instance string
	cutoff   time.Time
	out      *encoder
	partial  []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			return n, nil
		}
		line := string(w.partial[:i])
		w.partial = w.partial[i+1:]
		if !w.cutoff.IsZero() {
			stamp, _, _ := strings.Cut(line, " ")
			if t, err := time.Parse(time.RFC3339Nano, stamp); err == nil && t.Before(w.cutoff) {
				continue
			}
		}
		if err := w.out.send(api.LogLine{Instance: w.instance, Line: line}); err != nil {
			return 0, err
		}
	}
}

// HookLog is where an app's hook output is kept, under its directory
// (the agent writes it; see agent.HookLogName).
const HookLog = "hooks.log"

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}
