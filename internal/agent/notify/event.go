package notify

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Event is one datagram from an app, attributed to the process the kernel
// says sent it.
type Event struct {
	PID    int               // from SCM_CREDENTIALS, not from the payload
	Fields map[string]string // READY=1, STOPPING=1, STATUS=…, MAINPID=…, ERRNO=…
	Raw    string            // the payload as received
}

// Ready reports whether the app says it has finished starting up.
func (e Event) Ready() bool { return e.Fields["READY"] == "1" }

// parseFields reads sd_notify's format: newline-separated KEY=VALUE lines.
// Lines without '=' or with an empty key are ignored, as systemd ignores
// them; a repeated key keeps its last value.
func parseFields(payload string) map[string]string {
	fields := make(map[string]string)
	for line := range strings.SplitSeq(payload, "\n") {
		key, value, ok := strings.Cut(line, "=")
		if !ok || key == "" {
			continue
		}
		fields[key] = value
	}
	return fields
}

// procStart is the start time of pid in clock ticks since boot (field 22 of
// /proc/PID/stat). Together with the pid it names one process for good: a pid
// can be reused, a (pid, start time) pair cannot.
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses; everything
	// after its closing parenthesis is plain space-separated fields.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("stat of pid %d: malformed", pid)
	}
	rest := strings.Fields(s[i+1:])
	const startField = 22 - 3 // rest begins at field 3, state
	if len(rest) <= startField {
		return 0, fmt.Errorf("stat of pid %d: malformed", pid)
	}
	return strconv.ParseUint(rest[startField], 10, 64)
}
