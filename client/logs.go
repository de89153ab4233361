package client

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
)

// LogQuery selects process logs: App's, on Host and of Process when given.
type LogQuery struct {
	App, Host, Process string
	Lines              int           // from the end of each instance's log; 0: the server's default, -1: all
	Since              time.Duration // only lines this recent
	Follow             bool
	Hooks              bool // the hook log instead of the processes' logs
}

// Logs streams the log lines q selects from the agents, calling fn with
// each, until the stream ends (or, with Follow, ctx does). A stream the
// server ends because the token ended (revoked, expired) returns an
// EUNAUTH error saying so.
func (c *Client) Logs(ctx context.Context, q LogQuery, fn func(api.LogLine)) error {
	v := url.Values{"app": {q.App}}
	if q.Host != "" {
		v.Set("host", q.Host)
	}
	if q.Process != "" {
		v.Set("process", q.Process)
	}
	if q.Lines != 0 {
		v.Set("lines", strconv.Itoa(q.Lines))
	}
	if q.Since > 0 {
		v.Set("since", q.Since.String())
	}
	if q.Follow {
		v.Set("follow", "1")
	}
	if q.Hooks {
		v.Set("hooks", "1")
	}
	base := c.base()
	u := *base
	u.Path = strings.TrimRight(base.Path, "/") + api.PathLogs
	u.RawQuery = v.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "ferry")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		return c.answerError(base, call{method: http.MethodGet, path: api.PathLogs}, resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var l api.LogLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			// A stream the server ends early (the token was revoked or
			// expired) ends with an error answer's body, whose "error" is
			// an object, not a LogLine's string.
			var eb api.ErrorBody
			if json.Unmarshal(sc.Bytes(), &eb) == nil && eb.Error.Code != "" {
				return &ferry.Error{Code: eb.Error.Code, Message: "logs: " + eb.Error.Message}
			}
			return fmt.Errorf("logs: unreadable line from %s: %w", base.Host, err)
		}
		fn(l)
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("logs: %w", unwrapURL(err))
	}
	return nil
}

// LogRequests waits up to wait for the server's requests for this agent's
// logs (agent credential).
func (c *Client) LogRequests(ctx context.Context, wait time.Duration) ([]api.LogRequest, error) {
	var out []api.LogRequest
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathAgentLogs, query: url.Values{"wait": {wait.String()}}, out: &out, wait: wait})
	return out, err
}

// SendLogs streams r, NDJSON api.LogLines, as the answer to log request
// id, until r ends or the server says the client went away.
func (c *Client) SendLogs(ctx context.Context, id string, r io.Reader) error {
	_, err := c.do(ctx, call{method: http.MethodPost, path: path(api.PathAgentLogData, id), raw: r, length: -1,
		header: http.Header{"Content-Type": {"application/x-ndjson"}}, wait: -1})
	return err
}
