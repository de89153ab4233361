package server

import (
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/ferrydeploy/ferry/internal/repo"
	"github.com/ferrydeploy/ferry/internal/state"
)

// reportWriter coalesces agents' reports: while one batch is being
// committed the next ones gather, and each batch goes to the state store in
// transactions of up to state.MaxSwaps hosts, the newest report per host.
// A thousand agents reporting at once then cost a few commits instead of a
// thousand fsyncs queued one behind the other — which, while a fleet
// unpacked a release, held reports back long enough for hosts to look lost.
// A report's request still waits until its batch is committed, so an
// agent learns when the server could not store it.
type reportWriter struct {
	repo *repo.Repo
	mu   sync.Mutex
	next map[string]*pendingReport // host → its newest report not yet written
	kick chan struct{}
}

type pendingReport struct {
	value repo.Report
	done  []chan error // one per request waiting for this host's write
}

func newReportWriter(r *repo.Repo) *reportWriter {
	return &reportWriter{repo: r, next: map[string]*pendingReport{}, kick: make(chan struct{}, 1)}
}

// put queues host's report and returns a channel that says how its write
// went.
func (w *reportWriter) put(host string, value repo.Report) <-chan error {
	done := make(chan error, 1)
	w.mu.Lock()
	p := w.next[host]
	if p == nil {
		p = &pendingReport{}
		w.next[host] = p
	}
	p.value = value
	p.done = append(p.done, done)
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return done
}

// run writes batches until ctx ends; what is queued then fails with ctx's
// error.
func (w *reportWriter) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			w.fail(w.take(), ctx.Err())
			return
		case <-w.kick:
		}
		for batch := w.take(); len(batch) > 0; batch = w.take() {
			w.write(ctx, batch)
		}
	}
}

func (w *reportWriter) take() map[string]*pendingReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	batch := w.next
	w.next = map[string]*pendingReport{}
	return batch
}

func (w *reportWriter) fail(batch map[string]*pendingReport, err error) {
	for _, p := range batch {
		for _, c := range p.done {
			c <- err
		}
	}
}

// write stores batch, MaxSwaps hosts per transaction, and answers each
// waiting request.
func (w *reportWriter) write(ctx context.Context, batch map[string]*pendingReport) {
	for hosts := range slices.Chunk(slices.Sorted(maps.Keys(batch)), state.MaxSwaps) {
		err := w.writeChunk(ctx, hosts, batch)
		for _, h := range hosts {
			for _, c := range batch[h].done {
				c <- err
			}
		}
	}
}

func (w *reportWriter) writeChunk(ctx context.Context, hosts []string, batch map[string]*pendingReport) error {
	reps := make(map[string]repo.Report, len(hosts))
	for _, h := range hosts {
		reps[h] = batch[h].value
	}
	return w.repo.PutReports(ctx, reps)
}
