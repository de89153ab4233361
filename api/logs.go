package api

import "time"

// Log paths. A client's request for logs reaches the agents of the hosts
// that run the app through the server: each agent long-polls for the
// requests meant for it and streams the lines back in a POST.
const (
	PathLogs         = "/v1/logs"            // GET ?app=&host=&process=&lines=N&since=D&follow=1&hooks=1 → NDJSON stream of LogLine
	PathAgentLogs    = "/v1/agent/logs"      // GET ?wait=D → []LogRequest, blocking (agent credential)
	PathAgentLogData = "/v1/agent/logs/{id}" // POST NDJSON stream of LogLine (agent credential)
)

// LogRequest asks one agent for an app's process logs.
type LogRequest struct {
	ID      string        `json:"id"`
	App     string        `json:"app"`
	Process string        `json:"process,omitempty"` // "": every process
	Lines   int           `json:"lines"`             // from the end of each instance's log; -1: all
	Since   time.Duration `json:"since,omitempty"`   // only lines this recent
	Follow  bool          `json:"follow,omitempty"`
	// Hooks asks for the app's hook log (every hook's output, each deploy
	// after a line naming it) instead of its processes' logs.
	Hooks bool `json:"hooks,omitempty"`
}

// HooksInstance names the hook log's lines in LogLine.Instance.
const HooksInstance = "hooks"

// LogLine is one line of a process instance's log on a host, or an error
// about that host's logs.
type LogLine struct {
	Host     string `json:"host,omitempty"`
	Instance string `json:"instance,omitempty"` // e.g. web.1
	Line     string `json:"line,omitempty"`     // as logged: RFC 3339 time, stream, text
	Error    string `json:"error,omitempty"`
}
