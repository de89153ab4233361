// Package notify is the host agent's side of sd_notify: a datagram socket
// whose path the agent puts in an app's NOTIFY_SOCKET, and on which the app
// says READY=1 when it can serve, STOPPING=1 when it begins to shut down, and
// STATUS=… as it likes.
//
// Every datagram is attributed to the process the kernel says sent it
// (SO_PASSCRED), never to anything written in the payload, so one process
// cannot report readiness for another. The socket is world-writable by
// default, as systemd's own /run/systemd/notify is: apps run as other users
// must be able to reach it, and the pid check — not the file mode — is what
// keeps one process from speaking for another.
package notify

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// DefaultMode lets apps running as any user send; see the package comment.
	DefaultMode fs.FileMode = 0o666

	// maxDatagram is well above sd_notify's practical limit (systemd reads at
	// most a page of text); a longer datagram is dropped, not cut, since a cut
	// one could turn "READY=10…" into "READY=1".
	maxDatagram = 64 << 10

	// subBuffer is how many events a subscriber may fall behind before new
	// ones are dropped; the read loop never blocks on a slow subscriber.
	subBuffer = 64

	// retainFor and retainMax bound the events kept for subscribers that come
	// late: a child may say READY=1 before its parent has learned its pid from
	// fork, let alone subscribed to it.
	retainFor = 30 * time.Second
	retainMax = 1024
)

// Log keys.
const (
	keyPath  = "path"
	keyPID   = "pid"
	keyErr   = "err"
	keyBytes = "bytes"
)

// Config says how to listen. The zero value of each field means its default.
type Config struct {
	Mode   fs.FileMode  // the socket file's mode; DefaultMode when zero
	Logger *slog.Logger // dropped datagrams are logged here; discarded when nil
}

// Listener receives sd_notify datagrams on a unixgram socket and hands each
// to the subscribers of its sender's pid.
type Listener struct {
	path string
	conn *net.UnixConn
	file fs.FileInfo // the socket file we bound, to remove only our own on Close
	log  *slog.Logger
	done chan struct{} // closed when the read loop returns

	mu     sync.Mutex
	subs   map[int][]*subscription
	recent []received // oldest first
	closed bool
}

// subscription is one Subscribe call. start is the start time of the process
// subscribed to, so that a pid reused by another process is not mistaken for
// it; 0 when it could not be read, and then the pid alone decides.
type subscription struct {
	ch    chan Event
	start uint64
}

// received is an event kept for late subscribers.
type received struct {
	ev    Event
	start uint64
	at    time.Time
}

// Listen listens at path with the default Config.
func Listen(path string) (*Listener, error) {
	return Config{}.Listen(path)
}

// Listen creates a unixgram socket at path, replacing a stale socket left
// there by an earlier run; it refuses to replace anything that is not a
// socket. The directory holding path decides who can reach it at all.
func (c Config) Listen(path string) (*Listener, error) {
	if c.Mode == 0 {
		c.Mode = DefaultMode
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	conn, err := bind(path)
	if err != nil {
		return nil, err
	}
	// Bind applied the umask; the mode asked for is the one wanted.
	if err := os.Chmod(path, c.Mode); err != nil {
		conn.Close()
		os.Remove(path)
		return nil, fmt.Errorf("notify: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("notify: %w", err)
	}
	l := &Listener{
		path: path,
		conn: conn,
		file: fi,
		log:  c.Logger,
		done: make(chan struct{}),
		subs: make(map[int][]*subscription),
	}
	go l.readLoop()
	return l, nil
}

func removeStale(path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("notify: %w", err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("notify: %s exists and is not a socket", path)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("notify: remove stale socket: %w", err)
	}
	return nil
}

// bind makes the socket by hand so SO_PASSCRED is on before it has a name:
// no datagram can ever arrive without its sender's credentials.
func bind(path string) (*net.UnixConn, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("notify: socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("notify: set SO_PASSCRED: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("notify: bind %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // FilePacketConn works on a dup
	pc, err := net.FilePacketConn(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("notify: %w", err)
	}
	return pc.(*net.UnixConn), nil
}

// Path is where the socket is: the value for an app's NOTIFY_SOCKET.
func (l *Listener) Path() string { return l.path }

// Subscribe returns a channel of the events sent by process pid, and a func
// that ends the subscription and closes the channel. The channel is also
// closed when the Listener is.
//
// Events pid sent in the last 30 seconds before Subscribe come first, so a
// caller may subscribe after starting the process without missing what it
// said at once. They are matched by the process's start time as well as its
// pid: another process that had the same pid earlier is not replayed.
//
// Only the sender's own pid counts: MAINPID=… arrives as a field of the
// event like any other, for the caller to act on (for instance by
// subscribing to the new pid); the Listener does not start accepting
// datagrams from the pid it names.
//
// A subscriber that falls 64 events behind loses the newest ones.
func (l *Listener) Subscribe(pid int) (<-chan Event, func()) {
	ch := make(chan Event, subBuffer)
	start, err := procStart(pid)
	if err != nil {
		start = 0
	}
	sub := &subscription{ch: ch, start: start}

	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		close(ch)
		return ch, func() {}
	}
	if start != 0 {
		cutoff := time.Now().Add(-retainFor)
		for _, r := range l.recent {
			if r.ev.PID == pid && r.start == start && r.at.After(cutoff) {
				l.send(sub, r.ev)
			}
		}
	}
	l.subs[pid] = append(l.subs[pid], sub)
	cancel := sync.OnceFunc(func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		subs := l.subs[pid]
		i := slices.Index(subs, sub)
		if i < 0 {
			return // Close got here first and closed the channel
		}
		if subs = slices.Delete(subs, i, i+1); len(subs) == 0 {
			delete(l.subs, pid)
		} else {
			l.subs[pid] = subs
		}
		close(ch)
	})
	return ch, cancel
}

// WaitReady returns nil once process pid has sent READY=1, including in the
// 30 seconds before the call (see Subscribe). It does not notice the process
// exiting: the caller, who reaps it, cancels ctx then. The error wraps
// ctx's cause, or net.ErrClosed when the Listener is closed.
func (l *Listener) WaitReady(ctx context.Context, pid int) error {
	ch, cancel := l.Subscribe(pid)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("notify: wait for READY=1 from pid %d: %w", pid, context.Cause(ctx))
		case ev, ok := <-ch:
			if !ok {
				return fmt.Errorf("notify: wait for READY=1 from pid %d: %w", pid, net.ErrClosed)
			}
			if ev.Ready() {
				return nil
			}
		}
	}
}

// Close stops listening, closes every subscriber's channel and removes the
// socket file, unless another Listener has since replaced it.
func (l *Listener) Close() error {
	err := l.conn.Close()
	<-l.done

	l.mu.Lock()
	if !l.closed {
		l.closed = true
		for _, subs := range l.subs {
			for _, s := range subs {
				close(s.ch)
			}
		}
		l.subs = nil
		l.recent = nil
	}
	l.mu.Unlock()

	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.file) {
		if rerr := os.Remove(l.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("notify: close: %w", err)
	}
	return nil
}

func (l *Listener) readLoop() {
	defer close(l.done)
	buf := make([]byte, maxDatagram)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred)+unix.CmsgSpace(4*253))
	for {
		n, oobn, flags, _, err := l.conn.ReadMsgUnix(buf, oob)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			// Nothing a datagram socket returns here is worth ending the
			// loop for: readiness of every app goes through it.
			l.log.Error("notify: read", keyPath, l.path, keyErr, err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		l.handle(buf[:n], oob[:oobn], flags)
	}
}

// handle attributes one datagram to its sender and delivers it.
func (l *Listener) handle(payload, oob []byte, flags int) {
	pid := senderPID(oob)
	switch {
	case pid <= 0:
		// No credentials, or a sender in another pid namespace (pid 0).
		l.log.Debug("notify: dropped datagram without sender pid", keyBytes, len(payload))
		return
	case flags&unix.MSG_TRUNC != 0:
		l.log.Warn("notify: dropped oversized datagram", keyPID, pid)
		return
	}
	ev := Event{PID: pid, Fields: parseFields(string(payload)), Raw: string(payload)}
	// Read now, while the sender most likely still runs; an event whose
	// sender is already gone is delivered live but not kept.
	start, err := procStart(pid)
	if err != nil {
		start = 0
	}

	l.mu.Lock()
	defer l.mu.Unlock()
	delivered := false
	for _, s := range l.subs[pid] {
		if s.start != 0 && start != 0 && s.start != start {
			continue // the pid now names another process than the one subscribed to
		}
		l.send(s, ev)
		delivered = true
	}
	if start != 0 {
		l.retain(received{ev: ev, start: start, at: time.Now()})
	}
	if !delivered {
		l.log.Debug("notify: no subscriber for sender", keyPID, pid, keyBytes, len(payload))
	}
}

// send never blocks: the caller holds l.mu and runs the read loop.
func (l *Listener) send(s *subscription, ev Event) {
	select {
	case s.ch <- ev:
	default:
		l.log.Warn("notify: subscriber behind, event dropped", keyPID, ev.PID)
	}
}

func (l *Listener) retain(r received) {
	cutoff := r.at.Add(-retainFor)
	i := 0
	for i < len(l.recent) && (l.recent[i].at.Before(cutoff) || len(l.recent)-i >= retainMax) {
		i++
	}
	l.recent = append(l.recent[i:], r)
}

// senderPID is the pid in the datagram's SCM_CREDENTIALS, or 0. File
// descriptors a sender passed along (FDSTORE=1) are closed: the agent does
// not keep them, and must not leak them.
func senderPID(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	pid := 0
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_CREDENTIALS:
			if cred, err := unix.ParseUnixCredentials(&m); err == nil {
				pid = int(cred.Pid)
			}
		case unix.SCM_RIGHTS:
			if fds, err := unix.ParseUnixRights(&m); err == nil {
				for _, fd := range fds {
					unix.Close(fd)
				}
			}
		}
	}
	return pid
}
