// Package logfile keeps the log files of the agent's process instances:
// every line of an app's stdout and stderr, timestamped, in
// logs/<process>.<n>.log, rotated by size.
//
// Reading the app's pipes never waits for the disk, because a full pipe
// stops the app itself: lines wait in a bounded queue for the one goroutine
// that writes the file, and when the disk falls further behind than that
// queue holds, lines are dropped, counted, and the count is written into the
// file where they would have been.
package logfile

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultMaxSize = 10 << 20
	defaultKeep    = 5
	defaultBuffer  = 4 << 20

	// maxLine bounds one line so a newline-free stream cannot grow
	// memory without limit; longer lines are split.
	maxLine = 64 << 10
	// flushSize is how many bytes of lines go to the disk in one write.
	flushSize = 256 << 10
)

// Options tune a Writer; zero values take the defaults.
type Options struct {
	MaxSize int64            // rotate when the live file would exceed this; default 10 MiB
	Keep    int              // rotated files kept (path.1 newest … path.Keep oldest); default 5
	Buffer  int              // bytes of lines held in memory while the disk is behind; default 4 MiB
	Now     func() time.Time // default time.Now; tests set it
}

// entry is one queued line, or, when line is nil, a run of dropped lines
// at the place in the stream where they were lost.
type entry struct {
	line    []byte // formatted, newline included
	dropped int64
	at      time.Time
}

// Writer writes the lines of one process instance to its log file.
type Writer struct {
	path string
	opt  Options
	// beforeWrite, when set, runs before every write to the file; tests
	// use it to make the disk slow.
	beforeWrite func()

	mu     sync.Mutex
	wake   *sync.Cond
	queue  []entry
	queued int // bytes of lines queued or being written
	closed bool

	dropped atomic.Int64
	done    chan struct{}

	// Owned by the writing goroutine; err is read by Close after done.
	f    *os.File
	size int64
	buf  []byte
	err  error
}

// Open opens (appending) or creates path (0640) and its directory.
func Open(path string, opt Options) (*Writer, error) {
	return open(path, opt, nil)
}

func open(path string, opt Options, beforeWrite func()) (*Writer, error) {
	if opt.MaxSize <= 0 {
		opt.MaxSize = defaultMaxSize
	}
	if opt.Keep <= 0 {
		opt.Keep = defaultKeep
	}
	if opt.Buffer <= 0 {
		opt.Buffer = defaultBuffer
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	w := &Writer{path: path, opt: opt, beforeWrite: beforeWrite, done: make(chan struct{})}
	w.wake = sync.NewCond(&w.mu)
	if err := w.openFile(); err != nil {
		return nil, fmt.Errorf("logfile: %w", err)
	}
	go w.run()
	return w, nil
}

// Drain reads r until EOF or error, splitting it into lines and queueing
// each as "<RFC3339Nano UTC timestamp> <stream> <line>\n" (stream is e.g.
// "out" or "err"). Lines longer than 64 KiB are split. A final line without
// newline is still written. Drain never waits for the disk: when the queue
// is full it drops lines and counts them. Several Drains may run
// concurrently on one Writer (stdout and stderr); lines are never
// interleaved mid-line.
func (w *Writer) Drain(r io.Reader, stream string) {
	br := bufio.NewReaderSize(r, maxLine)
	split := false // the previous piece was cut at maxLine
	for {
		piece, err := br.ReadSlice('\n')
		// A newline right after a cut ends the line already queued,
		// not an empty one.
		if len(piece) > 0 && !(split && len(piece) == 1 && piece[0] == '\n') {
			w.add(stream, bytes.TrimSuffix(piece, []byte{'\n'}))
		}
		split = err == bufio.ErrBufferFull
		if err != nil && !split {
			return
		}
	}
}

// Note queues a line as if Drain had read it with stream "ferry", for the
// agent's own notes like "started pid 123". A multi-line note becomes
// several lines, a long one is split like Drain splits.
func (w *Writer) Note(format string, args ...any) {
	s := strings.TrimSuffix(fmt.Sprintf(format, args...), "\n")
	for _, line := range strings.Split(s, "\n") {
		for len(line) > maxLine {
			w.add("ferry", []byte(line[:maxLine]))
			line = line[maxLine:]
		}
		w.add("ferry", []byte(line))
	}
}

// Close waits for queued lines to be written and closes the file. Lines
// that Drain reads after Close are dropped.
func (w *Writer) Close() error {
	w.mu.Lock()
	w.closed = true
	w.wake.Signal()
	w.mu.Unlock()
	<-w.done
	return w.err
}

// Dropped is the number of lines dropped so far.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// add formats line and queues it, or drops it when the queue is full.
func (w *Writer) add(stream string, line []byte) {
	now := w.opt.Now()
	p := make([]byte, 0, len(time.RFC3339Nano)+len(stream)+len(line)+3)
	p = now.UTC().AppendFormat(p, time.RFC3339Nano)
	p = append(p, ' ')
	p = append(p, stream...)
	p = append(p, ' ')
	p = append(p, line...)
	p = append(p, '\n')

	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		w.dropped.Add(1)
		return
	}
	// An empty queue takes any line, so a Buffer smaller than one line
	// slows the log down instead of silencing it.
	if w.queued > 0 && w.queued+len(p) > w.opt.Buffer {
		w.dropped.Add(1)
		if n := len(w.queue); n > 0 && w.queue[n-1].line == nil {
			w.queue[n-1].dropped++
		} else {
			w.queue = append(w.queue, entry{dropped: 1, at: now})
			w.wake.Signal()
		}
		return
	}
	w.queue = append(w.queue, entry{line: p})
	w.queued += len(p)
	w.wake.Signal()
}

// run owns the file: it takes everything queued, writes it, and only then
// frees its room in the queue, so memory stays within Buffer.
func (w *Writer) run() {
	defer close(w.done)
	var batch []entry
	for {
		w.mu.Lock()
		for len(w.queue) == 0 && !w.closed {
			w.wake.Wait()
		}
		if len(w.queue) == 0 {
			w.mu.Unlock()
			break
		}
		batch, w.queue = w.queue, batch[:0]
		w.mu.Unlock()

		n := 0
		for _, e := range batch {
			if e.line == nil {
				w.writeLine(dropNote(e))
				continue
			}
			n += len(e.line)
			w.writeLine(e.line)
		}
		w.flush()
		clear(batch) // let the written lines be collected
		batch = batch[:0]

		w.mu.Lock()
		w.queued -= n
		w.mu.Unlock()
	}
	if w.f != nil {
		if err := w.f.Close(); err != nil {
			w.fail(err)
		}
	}
}

// dropNote is the line that stands where dropped lines were lost.
func dropNote(e entry) []byte {
	p := e.at.UTC().AppendFormat(nil, time.RFC3339Nano)
	p = append(p, " ferry: dropped "...)
	p = strconv.AppendInt(p, e.dropped, 10)
	return append(p, " lines (log writer behind)\n"...)
}

// writeLine buffers p, rotating first when p would push the live file past
// MaxSize, so rotation never splits a line.
func (w *Writer) writeLine(p []byte) {
	if w.f == nil {
		// An earlier rotation or write failed; the disk may be back.
		if err := w.openFile(); err != nil {
			w.fail(err)
			return
		}
	}
	if cur := w.size + int64(len(w.buf)); cur > 0 && cur+int64(len(p)) > w.opt.MaxSize {
		w.flush()
		w.rotate()
		if w.f == nil {
			return
		}
	}
	w.buf = append(w.buf, p...)
	if len(w.buf) >= flushSize {
		w.flush()
	}
}

func (w *Writer) flush() {
	if len(w.buf) == 0 {
		return
	}
	if w.beforeWrite != nil {
		w.beforeWrite()
	}
	if w.f != nil {
		n, err := w.f.Write(w.buf)
		w.size += int64(n)
		if err != nil {
			w.fail(err)
		}
	}
	w.buf = w.buf[:0]
}

// rotate shifts path.k to path.k+1 from the oldest down, so no rename
// overwrites a file not yet moved, then starts a new live file.
func (w *Writer) rotate() {
	if err := w.f.Close(); err != nil {
		w.fail(err)
	}
	w.f = nil
	// Files beyond Keep stay from a run with a larger Keep; path.Keep is
	// about to become one of them.
	for _, i := range slices.Backward(rotated(w.path)) {
		if i >= w.opt.Keep {
			w.removeErr(os.Remove(numbered(w.path, i)))
		} else {
			w.removeErr(os.Rename(numbered(w.path, i), numbered(w.path, i+1)))
		}
	}
	w.removeErr(os.Rename(w.path, numbered(w.path, 1)))
	if err := w.openFile(); err != nil {
		w.fail(err)
	}
}

// removeErr records err unless it only says the file was not there.
func (w *Writer) removeErr(err error) {
	if err != nil && !os.IsNotExist(err) {
		w.fail(err)
	}
}

func (w *Writer) openFile() error {
	if err := os.MkdirAll(filepath.Dir(w.path), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	w.f, w.size = f, fi.Size()
	return nil
}

// fail keeps the first error for Close: the writer goes on, since the
// lines keep coming and the disk may recover.
func (w *Writer) fail(err error) {
	if w.err == nil {
		w.err = fmt.Errorf("logfile: %w", err)
	}
}
