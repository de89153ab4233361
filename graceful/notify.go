package graceful

import (
	"fmt"
	"net"
	"os"
)

// notify sends one sd_notify(3) state line, such as "READY=1", to the
// supervisor named by $NOTIFY_SOCKET. Without a supervisor it does nothing, so
// an app behaves the same run by hand, by systemd or by ferry's agent.
//
// The socket is dialled per message rather than kept open: the app sends two
// messages in its life, and a fresh dial follows the supervisor if it has
// re-created its socket since we started (ferry's agent does when it
// re-execs). A name starting with '@' is in the abstract namespace; the net
// package already maps that prefix, so it is passed through unchanged.
func notify(state string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("graceful: notify %s: %w", state, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("graceful: notify %s: %w", state, err)
	}
	return nil
}
