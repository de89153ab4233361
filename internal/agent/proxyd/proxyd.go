// Package proxyd is the agent's proxy process: the one place where the
// public listening sockets of a host's apps live, and where proxy-mode
// ports are served. It runs as `ferry __proxy --root ROOT`, a process of
// its own that the agent starts, leaves running when it stops or is killed,
// and finds again when it starts, through a control socket under the root
// (ROOT/proxy.sock). So an agent restart — systemctl restart, a crash, a
// SIGKILL — neither closes a port nor stops the proxying, and a restarted
// agent gets back the very socket its handoff instances accept on instead
// of binding a second one beside it.
//
// The agent binds each port itself (exclusively: a port another process
// holds is an error naming that process) and hands the socket over with
// SCM_RIGHTS; it keeps a duplicate, which it passes to handoff instances and
// hands again to a new proxy process should this one die. The proxy process
// exits once it holds no port.
//
// The control protocol is one request per connection over a SOCK_SEQPACKET
// unix socket: a JSON request, then zero or more JSON events and a final
// JSON reply, each one packet; a socket travels as SCM_RIGHTS beside a
// packet.
package proxyd

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// SocketFile is the control socket, under the agent's root.
	SocketFile = "proxy.sock"
	// Command is the hidden subcommand of the ferry binary that runs the
	// proxy process (Main).
	Command = "__proxy"

	// envReadyFD is the pipe a starting proxy process writes "ready" to
	// once its control socket listens.
	envReadyFD = "FERRY_PROXY_READY_FD"
	// envState is what an upgrading proxy process hands its successor: the
	// ports, their fds and backends (handover).
	envState = "FERRY_PROXY_STATE"

	// maxPacket bounds one packet of the protocol: the largest, an Info,
	// takes about 100 bytes a port.
	maxPacket = 128 << 10
)

// Ops of the control protocol.
const (
	opInfo    = "info"    // → Info
	opOpen    = "open"    // port: the socket (fd) and its owner when held
	opHold    = "hold"    // port, owner + fd: keep this socket
	opAdd     = "add"     // port, backend
	opRemove  = "remove"  // port, backend, timeout: events "quiet", then done
	opSync    = "sync"    // port, backends: exactly these in rotation
	opServe   = "serve"   // port, on: proxy it, or stop proxying it (draining)
	opClose   = "close"   // port, timeout
	opRetain  = "retain"  // ports: close every other
	opWatch   = "watch"   // the connection stays open while the process runs
	opUpgrade = "upgrade" // self: hand everything to a new proxy process
)

type request struct {
	Op       string   `json:"op"`
	Port     int      `json:"port,omitempty"`
	Owner    string   `json:"owner,omitempty"`
	Backend  string   `json:"backend,omitempty"`
	Backends []string `json:"backends,omitempty"`
	Ports    []int    `json:"ports,omitempty"`
	On       bool     `json:"on,omitempty"`
	// TimeoutMS bounds a drain (remove, close, serve off).
	TimeoutMS int64  `json:"timeout_ms,omitempty"`
	Self      string `json:"self,omitempty"`
}

func (r request) timeout(def time.Duration) time.Duration {
	if r.TimeoutMS <= 0 {
		return def
	}
	return time.Duration(r.TimeoutMS) * time.Millisecond
}

type reply struct {
	Event string `json:"event,omitempty"` // "quiet": an event, more follows
	Error string `json:"error,omitempty"`
	// ErrExiting marks the refusal of a proxy process that is on its way
	// out (it holds no port any more): start another.
	Exiting bool   `json:"exiting,omitempty"`
	Held    bool   `json:"held,omitempty"`
	Owner   string `json:"owner,omitempty"`
	Info    *Info  `json:"info,omitempty"`
}

// Info is what a proxy process says about itself.
type Info struct {
	PID        int    `json:"pid"`
	StartTicks uint64 `json:"start_ticks"`
	// Exe identifies the binary it runs, so that an agent of another
	// build upgrades it.
	Exe   FileID     `json:"exe"`
	Ports []PortInfo `json:"ports"`
}

// PortInfo is one port a proxy process holds.
type PortInfo struct {
	Port     int      `json:"port"`
	Owner    string   `json:"owner"`
	Serving  bool     `json:"serving"`
	Backends []string `json:"backends,omitempty"`
}

// FileID names a file's contents cheaply: a new build replaced by rename
// has a new inode, one written in place a new mtime.
type FileID struct {
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime_ns"`
}

// SelfExe is the FileID of the running binary.
func SelfExe() FileID {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/exe", &st); err != nil {
		return FileID{}
	}
	return FileID{Dev: st.Dev, Ino: st.Ino, Size: st.Size, MTime: st.Mtim.Nano()}
}

// send writes v as one packet, with fd (when >= 0) beside it.
func send(c *net.UnixConn, v any, fd int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	_, _, err = c.WriteMsgUnix(b, oob, nil)
	return err
}

// receive reads one packet into v, and the socket that came with it (nil
// for none). A received fd is close-on-exec: Go's ReadMsgUnix asks for it
// (MSG_CMSG_CLOEXEC).
func receive(c *net.UnixConn, v any) (*os.File, error) {
	buf := make([]byte, maxPacket)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	var f *os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, fmt.Errorf("control message: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				if f == nil {
					f = os.NewFile(uintptr(fd), "received socket")
				} else {
					unix.Close(fd) // one socket per packet, no more
				}
			}
		}
	}
	if n == 0 || flags&unix.MSG_TRUNC != 0 {
		if f != nil {
			f.Close()
		}
		if n == 0 {
			return nil, errEOF
		}
		return nil, fmt.Errorf("a packet over %d bytes", maxPacket)
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		if f != nil {
			f.Close()
		}
		return nil, fmt.Errorf("bad packet: %w", err)
	}
	return f, nil
}

// errEOF is a zero-length read: the peer closed the connection.
var errEOF = errors.New("connection closed")

// listenerPort is the local port of a listening TCP socket; it fails for
// anything else.
func listenerPort(f *os.File) (int, error) {
	sc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var port int
	var serr error
	err = sc.Control(func(fd uintptr) {
		acc, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
		if err != nil || acc != 1 {
			serr = errors.New("not a listening socket")
			return
		}
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			serr = err
			return
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			port = a.Port
		case *unix.SockaddrInet6:
			port = a.Port
		default:
			serr = errors.New("not a TCP socket")
		}
	})
	if err != nil {
		return 0, err
	}
	return port, serr
}
