package logfile

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"time"
)

// pollInterval is how often a following Tail looks for new lines and for
// rotation. Polling, unlike inotify, works the same on every filesystem
// and needs no platform code; 200ms is quicker than a person reads.
var pollInterval = 200 * time.Millisecond

// Tail writes the last n lines (n<0: all) of path and its rotated files,
// oldest first, to out; with follow it keeps writing new lines, following
// rotation (the live file being renamed to path.1 and recreated), until
// ctx is done. Without follow, a log with no files is an error wrapping
// fs.ErrNotExist; with follow, Tail waits for the file to appear.
func Tail(ctx context.Context, path string, n int, follow bool, out io.Writer) error {
	files, live, _ := openNewestFirst(path, nil)
	slices.Reverse(files)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if len(files) == 0 && !follow {
		return fmt.Errorf("logfile: tail %s: %w", path, fs.ErrNotExist)
	}

	start, off := 0, int64(0)
	if n >= 0 {
		start = len(files)
		if start > 0 {
			// Nothing to show yet: a following Tail starts at the end.
			start--
			end, err := files[start].Seek(0, io.SeekEnd)
			if err != nil {
				return fmt.Errorf("logfile: tail: %w", err)
			}
			off = end
		}
		need := n
		for i := len(files) - 1; i >= 0 && need > 0; i-- {
			o, found, err := lastLines(files[i], need)
			if err != nil {
				return fmt.Errorf("logfile: tail: %w", err)
			}
			start, off, need = i, o, need-found
		}
	}
	t := &tailer{path: path, out: out, buf: make([]byte, 32<<10)}
	for i, f := range files {
		if i < start {
			continue
		}
		pos := int64(0)
		if i == start {
			pos = off
		}
		if _, err := f.Seek(pos, io.SeekStart); err != nil {
			return fmt.Errorf("logfile: tail: %w", err)
		}
		if err := t.copy(f); err != nil {
			return err
		}
		// The live file's unfinished line is still being written when
		// following; otherwise it is as much a line as any.
		if !(follow && live && i == len(files)-1) {
			if err := t.endFile(); err != nil {
				return err
			}
		}
	}
	if !follow {
		return nil
	}
	var cur *os.File
	if live {
		cur, files = files[len(files)-1], files[:len(files)-1]
	}
	return t.follow(ctx, cur)
}

// lastLines returns the offset in f where its last n lines begin, and how
// many lines it found (fewer than n when f is shorter). A final line
// without newline counts as a line.
func lastLines(f *os.File, n int) (int64, int, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := fi.Size()
	buf := make([]byte, 32<<10)
	found := 0
	for pos := size; pos > 0; {
		k := min(int64(len(buf)), pos)
		pos -= k
		if _, err := f.ReadAt(buf[:k], pos); err != nil && err != io.EOF {
			return 0, 0, err
		}
		for i := k - 1; i >= 0; i-- {
			// A newline begins the line after it; the one ending the
			// file begins nothing.
			if buf[i] != '\n' || pos+i == size-1 {
				continue
			}
			if found++; found == n {
				return pos + i + 1, found, nil
			}
		}
	}
	if size > 0 {
		found++
	}
	return 0, found, nil
}

// openNewestFirst opens path, then path.1, path.2, … and returns them
// newest first, with live telling whether the first is path itself. It
// stops before the file stop (when not nil) and reports whether it found
// it. Opening newest first means a rotation in the middle only shifts files
// towards names not yet opened, so none is missed; one seen twice is
// skipped.
func openNewestFirst(path string, stop os.FileInfo) (files []*os.File, live, found bool) {
	var seen []os.FileInfo
	take := func(name string) (last bool) {
		f, err := os.Open(name)
		if err != nil {
			return false
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return false
		}
		if stop != nil && os.SameFile(fi, stop) {
			f.Close()
			return true
		}
		if slices.ContainsFunc(seen, func(s os.FileInfo) bool { return os.SameFile(s, fi) }) {
			f.Close()
			return false
		}
		seen = append(seen, fi)
		files = append(files, f)
		return false
	}
	take(path)
	live = len(files) == 1
	idx := rotated(path)
	last := 0
	if len(idx) > 0 {
		last = idx[len(idx)-1]
	}
	// One past the last listed name catches a file shifted up meanwhile.
	for i := 1; i <= last+1; i++ {
		if take(numbered(path, i)) {
			return files, live, true
		}
	}
	return files, live, false
}

// tailer copies whole lines to out, holding back an unfinished one until
// its newline arrives, so a line being written is never printed in pieces.
type tailer struct {
	path    string
	out     io.Writer
	buf     []byte
	partial []byte
}

// copy writes what f holds from its offset to its end.
func (t *tailer) copy(f *os.File) error {
	for {
		n, err := f.Read(t.buf)
		if n > 0 {
			data := t.buf[:n]
			i := bytes.LastIndexByte(data, '\n')
			if i < 0 {
				t.partial = append(t.partial, data...)
			} else {
				if len(t.partial) > 0 {
					if err := t.write(t.partial); err != nil {
						return err
					}
					t.partial = t.partial[:0]
				}
				if err := t.write(data[:i+1]); err != nil {
					return err
				}
				t.partial = append(t.partial, data[i+1:]...)
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("logfile: tail: %w", err)
		}
	}
}

// endFile writes the unfinished line of a file that will not grow.
func (t *tailer) endFile() error {
	if len(t.partial) == 0 {
		return nil
	}
	t.partial = append(t.partial, '\n')
	err := t.write(t.partial)
	t.partial = t.partial[:0]
	return err
}

func (t *tailer) write(p []byte) error {
	if _, err := t.out.Write(p); err != nil {
		return fmt.Errorf("logfile: tail: %w", err)
	}
	return nil
}

// follow polls cur (the live file, or nil while there is none) for new
// lines until ctx is done.
func (t *tailer) follow(ctx context.Context, cur *os.File) error {
	defer func() {
		if cur != nil {
			cur.Close()
		}
	}()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		var err error
		cur, err = t.poll(cur)
		if err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// poll copies what is new in cur and, when path names another file now,
// what was written to cur before it was rotated, every rotated file newer
// than cur, and the new live file; it returns the file to follow next.
func (t *tailer) poll(cur *os.File) (*os.File, error) {
	if cur == nil {
		f, err := os.Open(t.path)
		if err != nil {
			return nil, nil // not there yet
		}
		return f, t.copy(f)
	}
	if err := t.copy(cur); err != nil {
		return cur, err
	}
	old, err := cur.Stat()
	if err != nil {
		return cur, fmt.Errorf("logfile: tail: %w", err)
	}
	now, err := os.Stat(t.path)
	if err != nil {
		// Between the rename and the new file, or deleted: what is
		// written meanwhile still goes to cur.
		return cur, nil
	}
	if os.SameFile(old, now) {
		pos, err := cur.Seek(0, io.SeekCurrent)
		if err != nil {
			return cur, fmt.Errorf("logfile: tail: %w", err)
		}
		if now.Size() < pos { // truncated in place
			t.partial = t.partial[:0]
			_, err = cur.Seek(0, io.SeekStart)
		}
		return cur, err
	}

	// The writer closes the live file before renaming it, so cur is
	// complete now.
	if err := t.copy(cur); err != nil {
		return cur, err
	}
	cur.Close()
	if err := t.endFile(); err != nil {
		return nil, err
	}
	files, live, found := openNewestFirst(t.path, old)
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	if !live {
		return nil, nil
	}
	next := files[0]
	files = files[1:]
	// Without cur among the rotated files there is no telling which of
	// them were already shown, so only the new live file is.
	if found {
		for _, f := range slices.Backward(files) {
			if err := t.copy(f); err != nil {
				return next, err
			}
			if err := t.endFile(); err != nil {
				return next, err
			}
		}
	}
	return next, t.copy(next)
}
