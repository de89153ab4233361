package integration

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferrydeploy/ferry/internal/testenv"
	"golang.org/x/sys/unix"
)

// This kernel has no netem qdisc (and no fq to honour departure times), so
// a link's delay is made the way netem would make it, with the kernel still
// carrying every packet: iptables' NFQUEUE target (xtables, built in here)
// hands each packet crossing the namespace's eth0 to this process, which
// gives its verdict — accept — only once the packet has waited the delay.
// Nothing is proxied: TCP sees a long round trip and nothing else changes.

// The nfnetlink queue protocol (linux/netfilter/nfnetlink_queue.h).
const (
	nfnlSubsysQueue      = 3
	nfqnlMsgPacket       = 0
	nfqnlMsgConfig       = 2
	nfqnlMsgVerdictBatch = 3
	nfqaPacketHdr        = 1
	nfqaVerdictHdr       = 2
	nfqaCfgCmd           = 1
	nfqaCfgParams        = 2
	nfqaCfgQueueMaxlen   = 3
	nfqnlCfgCmdBind      = 1
	nfqnlCopyMeta        = 1
	nfAccept             = 1
	// Packets held at once: at 500 ms each way a few thousand are in
	// flight during an artifact download; a full queue drops.
	delayQueueMax = 1 << 16
)

// linkDelay holds every packet in or out of one namespace's eth0 for a
// fixed time.
type linkDelay struct {
	ipt   string
	ns    string
	delay time.Duration
	fd    int

	mu   sync.Mutex
	held []heldPacket // in arrival order; with one delay, also in due order
	wake chan struct{}
	done chan struct{}
	wg   sync.WaitGroup
	// Counts for the test's log.
	packets int
	errs    []error
}

type heldPacket struct {
	id  uint32
	due time.Time
}

// delayLink makes every packet through ns's eth0, both ways, wait d. It
// needs root and iptables-legacy; lift, or the test's cleanup, ends it.
func delayLink(t *testing.T, ns string, d time.Duration) *linkDelay {
	t.Helper()
	l := &linkDelay{ipt: testenv.NeedCommand(t, "iptables-legacy"), ns: ns, delay: d, wake: make(chan struct{}, 1), done: make(chan struct{})}
	fd, err := l.open()
	if err != nil {
		t.Fatalf("delay %s's link: %v", ns, err)
	}
	l.fd = fd
	l.wg.Add(2)
	go l.read()
	go l.release()
	t.Cleanup(l.lift)
	for _, r := range delayRules {
		args := append([]string{"netns", "exec", ns, l.ipt, "-A"}, r...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	return l
}

// delayRules send what crosses eth0 to the queue (queues are per
// namespace).
const delayQueue = 1

var delayRules = [][]string{
	{"INPUT", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(delayQueue)},
	{"OUTPUT", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", strconv.Itoa(delayQueue)},
}

// lift ends the delay: the rules go first (with no reader a queue drops),
// then the held packets are let go.
func (l *linkDelay) lift() {
	for _, r := range delayRules {
		exec.Command("ip", append([]string{"netns", "exec", l.ns, l.ipt, "-D"}, r...)...).Run()
	}
	l.stop()
}

// open makes the queue's netlink socket inside the namespace (a netlink
// socket belongs to the namespace it was made in) and binds the queue.
func (l *linkDelay) open() (int, error) {
	type result struct {
		fd  int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread joins the namespace and is never unlocked, so it ends
		// with this goroutine instead of carrying the namespace to others.
		runtime.LockOSThread()
		fd, err := func() (int, error) {
			nsf, err := os.Open("/run/netns/" + l.ns)
			if err != nil {
				return -1, err
			}
			defer nsf.Close()
			if err := unix.Setns(int(nsf.Fd()), unix.CLONE_NEWNET); err != nil {
				return -1, fmt.Errorf("setns: %w", err)
			}
			return unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		}()
		ch <- result{fd, err}
	}()
	r := <-ch
	if r.err != nil {
		return -1, r.err
	}
	fd := r.fd
	fail := func(err error) (int, error) { unix.Close(fd); return -1, err }
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
	// A read wakes every 200 ms to see whether the delay was lifted.
	tv := unix.NsecToTimeval(int64(200 * time.Millisecond))
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	cmd := []byte{nfqnlCfgCmdBind, 0, 0, 0} // command, pad, pf (unused since Linux 3.8)
	params := binary.BigEndian.AppendUint32(nil, 0xffff)
	params = append(params, nfqnlCopyMeta) // the packet's id is all that is needed
	maxlen := binary.BigEndian.AppendUint32(nil, delayQueueMax)
	msg := l.message(nfqnlMsgConfig, unix.NLM_F_ACK, nlattr(nfqaCfgCmd, cmd), nlattr(nfqaCfgParams, params), nlattr(nfqaCfgQueueMaxlen, maxlen))
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fail(fmt.Errorf("bind queue: %w", err))
	}
	buf := make([]byte, 4096)
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		return fail(fmt.Errorf("bind queue: %w", err))
	}
	if n < 20 || binary.NativeEndian.Uint16(buf[4:]) != unix.NLMSG_ERROR {
		return fail(fmt.Errorf("bind queue: unexpected answer % x", buf[:n]))
	}
	if code := int32(binary.NativeEndian.Uint32(buf[16:])); code != 0 {
		return fail(fmt.Errorf("bind queue: %w", unix.Errno(-code)))
	}
	return fd, nil
}

// message is one nfnetlink queue message with its attributes.
func (l *linkDelay) message(typ uint16, flags uint16, attrs ...[]byte) []byte {
	body := []byte{unix.AF_UNSPEC, 0 /* NFNETLINK_V0 */, 0, delayQueue}
	for _, a := range attrs {
		body = append(body, a...)
	}
	h := make([]byte, 16)
	binary.NativeEndian.PutUint32(h[0:], uint32(16+len(body)))
	binary.NativeEndian.PutUint16(h[4:], nfnlSubsysQueue<<8|typ)
	binary.NativeEndian.PutUint16(h[6:], unix.NLM_F_REQUEST|flags)
	return append(h, body...)
}

func nlattr(typ uint16, payload []byte) []byte {
	a := make([]byte, 4, 4+len(payload)+3)
	binary.NativeEndian.PutUint16(a[0:], uint16(4+len(payload)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, payload...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return a
}

// read takes the packets the kernel queues and notes when each is due.
func (l *linkDelay) read() {
	defer l.wg.Done()
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-l.done:
			return
		default:
		}
		n, _, err := unix.Recvfrom(l.fd, buf, 0)
		now := time.Now()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			// ENOBUFS: messages were lost; their packets stay queued
			// until a later batch verdict lets them go.
			l.fail(fmt.Errorf("read queue: %w", err))
			if errors.Is(err, unix.ENOBUFS) {
				continue
			}
			return
		}
		eachMessage(buf[:n], func(typ uint16, msg []byte) {
			switch {
			case typ == unix.NLMSG_ERROR && len(msg) >= 20:
				// A refused verdict: its packets stay queued.
				if code := int32(binary.NativeEndian.Uint32(msg[16:])); code != 0 {
					l.fail(fmt.Errorf("queue: %w", unix.Errno(-code)))
				}
			case typ == nfnlSubsysQueue<<8|nfqnlMsgPacket && len(msg) >= 20:
				if id, ok := packetID(msg[16+4:]); ok {
					l.mu.Lock()
					l.held = append(l.held, heldPacket{id, now.Add(l.delay)})
					l.packets++
					l.mu.Unlock()
					select {
					case l.wake <- struct{}{}:
					default:
					}
				}
			}
		})
	}
}

// eachMessage calls f with the type and bytes (header included) of each
// netlink message in b.
func eachMessage(b []byte, f func(typ uint16, msg []byte)) {
	for len(b) >= 16 {
		size := int(binary.NativeEndian.Uint32(b[0:]))
		if size < 16 || size > len(b) {
			return
		}
		f(binary.NativeEndian.Uint16(b[4:]), b[:size])
		b = b[min((size+3)&^3, len(b)):]
	}
}

func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		size := int(binary.NativeEndian.Uint16(attrs[0:]))
		typ := binary.NativeEndian.Uint16(attrs[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if size < 4 || size > len(attrs) {
			return 0, false
		}
		if typ == nfqaPacketHdr && size >= 8 {
			return binary.BigEndian.Uint32(attrs[4:]), true
		}
		attrs = attrs[(size+3)&^3:]
	}
	return 0, false
}

// release accepts, in one batch verdict, every packet that has waited its
// delay: a batch verdict covers all queued packets up to an id, and ids
// rise in arrival order.
func (l *linkDelay) release() {
	defer l.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		l.mu.Lock()
		now := time.Now()
		var last uint32
		due := 0
		for due < len(l.held) && !l.held[due].due.After(now) {
			last = l.held[due].id
			due++
		}
		l.held = l.held[due:]
		next := time.Hour
		if len(l.held) > 0 {
			next = l.held[0].due.Sub(now)
		}
		l.mu.Unlock()
		if due > 0 {
			if err := l.verdict(last); err != nil {
				l.fail(err)
			}
		}
		timer.Reset(next)
		select {
		case <-l.done:
			return
		case <-l.wake:
		case <-timer.C:
		}
	}
}

func (l *linkDelay) verdict(upTo uint32) error {
	v := binary.BigEndian.AppendUint32(nil, nfAccept)
	v = binary.BigEndian.AppendUint32(v, upTo)
	msg := l.message(nfqnlMsgVerdictBatch, 0, nlattr(nfqaVerdictHdr, v))
	if err := unix.Sendto(l.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("verdict: %w", err)
	}
	return nil
}

func (l *linkDelay) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.errs) < 10 {
		l.errs = append(l.errs, err)
	}
}

// stop ends the goroutines and lets the held packets go (closing the
// queue's socket would drop them): those it noted, and those still unread
// in the socket. The rules are gone by then, so no more come.
func (l *linkDelay) stop() {
	select {
	case <-l.done:
		return
	default:
	}
	close(l.done)
	l.wg.Wait()
	last, any := uint32(0), false
	if n := len(l.held); n > 0 {
		last, any = l.held[n-1].id, true
	}
	buf := make([]byte, 1<<16)
	for {
		n, _, err := unix.Recvfrom(l.fd, buf, unix.MSG_DONTWAIT)
		if err != nil {
			break
		}
		eachMessage(buf[:n], func(typ uint16, msg []byte) {
			if typ == nfnlSubsysQueue<<8|nfqnlMsgPacket && len(msg) >= 20 {
				if id, ok := packetID(msg[16+4:]); ok {
					last, any = id, true
				}
			}
		})
	}
	if any {
		l.verdict(last)
	}
	unix.Close(l.fd)
}

// report is what the delay did, for the test's log.
func (l *linkDelay) report() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := fmt.Sprintf("%d packets held %s each", l.packets, l.delay)
	if len(l.errs) > 0 {
		s += fmt.Sprintf("; errors: %v", l.errs)
	}
	return s
}
