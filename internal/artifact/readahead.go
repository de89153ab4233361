package artifact

import "io"

// readAhead reads r on its own goroutine, a few chunks ahead of its
// reader, so that decompressing the archive (one CPU) overlaps with
// creating and writing files (system calls, another CPU).
type readAhead struct {
	full chan raChunk
	free chan []byte
	stop chan struct{}
	done chan struct{}
	cur  raChunk
	off  int
}

type raChunk struct {
	b   []byte
	err error
}

const (
	raChunkSize = 64 << 10
	raChunks    = 4
)

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{full: make(chan raChunk, raChunks), free: make(chan []byte, raChunks), stop: make(chan struct{}), done: make(chan struct{})}
	for range raChunks {
		ra.free <- make([]byte, raChunkSize)
	}
	go ra.run(r)
	return ra
}

func (ra *readAhead) run(r io.Reader) {
	defer close(ra.done)
	for {
		var b []byte
		select {
		case b = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadAtLeast(r, b, len(b)/2)
		if err == io.ErrUnexpectedEOF && n > 0 {
			err = nil // a short read before the end; the next one says why
		}
		select {
		case ra.full <- raChunk{b[:n], err}:
		case <-ra.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (ra *readAhead) Read(p []byte) (int, error) {
	for ra.off == len(ra.cur.b) {
		if ra.cur.err != nil {
			return 0, ra.cur.err
		}
		if ra.cur.b != nil {
			ra.free <- ra.cur.b[:cap(ra.cur.b)] // never blocks: a slot per buffer
		}
		ra.cur, ra.off = <-ra.full, 0
	}
	n := copy(p, ra.cur.b[ra.off:])
	ra.off += n
	return n, nil
}

// close stops the goroutine and waits until it no longer reads r, so the
// caller may read r itself again.
func (ra *readAhead) close() {
	close(ra.stop)
	<-ra.done
}
