package desired

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Variables so tests can poll fast and run without inotify.
var (
	// statPoll is the fallback for changes inotify does not report.
	statPoll  = 5 * time.Second
	noInotify = false
)

const (
	// debounce lets a burst of events (create, close, rename) end before
	// the file is read, so it is read once. It is short because it is on
	// the path from a change to the new release running.
	debounce = 5 * time.Millisecond
	// settle is how long an empty file must stay empty before it counts:
	// `echo … > file` truncates before it writes, and an empty document
	// means "run nothing", so a read in between would stop every app.
	settle = 250 * time.Millisecond
)

// Watched on the directory, not the file: a watch on the file would follow
// the old inode after a rename-over and never see the new one. Not
// IN_MODIFY: a writer in the middle of an in-place write would have the
// document read half-written, and half a document may list fewer apps,
// stopping the rest; IN_CLOSE_WRITE says the writer is done.
const dirEvents = unix.IN_CLOSE_WRITE | unix.IN_ATTRIB | unix.IN_CREATE |
	unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF

// fileWatcher follows one file through inotify on its directory.
type fileWatcher struct {
	path, dir, base string
	log             *slog.Logger
	r               *reporter

	fd     int          // inotify instance; -1 when unavailable
	in     *os.File     // fd, read through the runtime poller so Close ends a blocked Read
	wd     atomic.Int32 // watch on dir; -1 when not watching
	dirIno uint64       // inode of the watched dir, to notice it being replaced
	lost   atomic.Bool

	seen       stamp     // the file as it was at the last read
	emptySince time.Time // when the file was first read empty, while it stays empty
}

// stamp is what a stat says about the file; when it changes, read again.
type stamp struct {
	ino, size    uint64
	mtime, ctime int64
	err          string
}

func stampOf(path string) stamp {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return stamp{err: err.Error()}
	}
	return stamp{ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}
}

func watchFile(ctx context.Context, path string, opt Options, r *reporter) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("desired state: %w", err)
	}
	w := &fileWatcher{path: abs, dir: filepath.Dir(abs), base: filepath.Base(abs), log: opt.Logger, r: r, fd: -1}
	w.wd.Store(-1)
	events := make(chan struct{}, 1)
	if err := w.open(); err != nil {
		w.log.Warn("inotify unavailable; checking the desired-state file by stat", "every", statPoll, "err", err)
	} else {
		defer w.in.Close() // ends readEvents
		go w.readEvents(events)
		w.rewatch()
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	if wait := w.check(); wait > 0 {
		timer.Reset(wait)
	}
	poll := time.NewTicker(statPoll)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-events:
			if w.lost.Load() {
				w.rewatch()
			}
			timer.Reset(debounce)
		case <-timer.C:
			if wait := w.check(); wait > 0 {
				timer.Reset(wait)
			}
		case <-poll.C:
			w.rewatch()
			if stampOf(w.path) != w.seen {
				if wait := w.check(); wait > 0 {
					timer.Reset(wait)
				}
			}
		}
	}
}

// check reads the file and reports it. It returns how long to wait before
// checking again when the file is empty but may be mid-write, else 0.
func (w *fileWatcher) check() time.Duration {
	st := stampOf(w.path)
	f, err := os.Open(w.path)
	if err != nil {
		w.seen, w.emptySince = st, time.Time{}
		w.r.fail(fmt.Errorf("desired state: %w", err))
		return 0
	}
	b, err := readAll(f)
	f.Close()
	if err != nil {
		w.seen, w.emptySince = st, time.Time{}
		w.r.fail(fmt.Errorf("desired state %s: %w", w.path, err))
		return 0
	}
	if len(b) > 0 || !w.r.ok || len(w.r.last) == 0 {
		w.emptySince = time.Time{} // nothing to lose by reporting it now
	} else {
		if w.emptySince.IsZero() {
			w.emptySince = time.Now()
		}
		if wait := settle - time.Since(w.emptySince); wait > 0 {
			return wait // w.seen is left alone, so the stat poll looks again too
		}
	}
	w.seen = st
	w.r.bytes(b)
	return 0
}

// open starts an inotify instance. Non-blocking, so that os.NewFile puts
// it in the runtime poller: an idle Read then parks a goroutine and costs
// no CPU, and Close wakes it.
func (w *fileWatcher) open() error {
	if noInotify {
		return errors.New("turned off")
	}
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return fmt.Errorf("inotify_init1: %w", err)
	}
	w.fd, w.in = fd, os.NewFile(uintptr(fd), "inotify")
	return nil
}

// rewatch (re)adds the watch on the directory when it was lost or the
// directory was replaced. The directory may not exist yet; the stat poll
// calls rewatch again.
func (w *fileWatcher) rewatch() {
	if w.fd < 0 {
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(w.dir, &st); err != nil {
		return
	}
	old := w.wd.Load()
	if old >= 0 && !w.lost.Load() && st.Ino == w.dirIno {
		return
	}
	// Forget the old watch first, so that its IN_IGNORED (which removing it
	// causes) is not taken for the loss of the new one.
	w.wd.Store(-1)
	if old >= 0 {
		unix.InotifyRmWatch(w.fd, uint32(old)) // fails if the kernel dropped it already
	}
	w.lost.Store(false)
	wd, err := unix.InotifyAddWatch(w.fd, w.dir, dirEvents)
	if err != nil {
		w.log.Warn("cannot watch the desired-state directory; checking by stat", "dir", w.dir, "every", statPoll, "err", err)
		return
	}
	w.wd.Store(int32(wd))
	w.dirIno = st.Ino
}

// readEvents signals out for every batch of events that may concern the
// file, until w.in is closed.
func (w *fileWatcher) readEvents(out chan<- struct{}) {
	buf := make([]byte, 64<<10)
	for {
		n, err := w.in.Read(buf)
		if err != nil {
			return // closed by watchFile
		}
		relevant := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			wd := int32(binary.NativeEndian.Uint32(buf[off:]))
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := buf[off+unix.SizeofInotifyEvent : min(off+unix.SizeofInotifyEvent+nameLen, n)]
			off += unix.SizeofInotifyEvent + nameLen
			if i := bytes.IndexByte(name, 0); i >= 0 { // the name is NUL-padded
				name = name[:i]
			}
			self := mask&(unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 && wd == w.wd.Load()
			if self {
				w.lost.Store(true)
			}
			// A name that is not ours can still matter when the file is a
			// symlink (a Kubernetes ConfigMap swaps a ..data link), so any
			// event then triggers a read; the bytes comparison absorbs it.
			if string(name) == w.base || self || mask&unix.IN_Q_OVERFLOW != 0 || w.isSymlink() {
				relevant = true
			}
		}
		if relevant {
			select {
			case out <- struct{}{}:
			default: // one pending signal is enough; the read sees all changes
			}
		}
	}
}

func (w *fileWatcher) isSymlink() bool {
	fi, err := os.Lstat(w.path)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}
