package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ferrydeploy/ferry/api"
)

// Config returns app's config at rev (0: the newest) as group sees it, or
// every scope when group is "". Secrets come masked.
func (c *Client) Config(ctx context.Context, app, group string, rev int) (api.Config, error) {
	q := url.Values{}
	if group != "" {
		q.Set("group", group)
	}
	if rev > 0 {
		q.Set("rev", strconv.Itoa(rev))
	}
	var out api.Config
	_, err := c.do(ctx, call{method: http.MethodGet, path: path(api.PathConfig, app), query: q, out: &out})
	return out, err
}

// ChangeConfig sets and unsets variables of app, making a new revision.
func (c *Client) ChangeConfig(ctx context.Context, app string, ch api.ConfigChange) (api.ConfigRevision, error) {
	var out api.ConfigRevision
	_, err := c.do(ctx, call{method: http.MethodPatch, path: path(api.PathConfig, app), body: ch, out: &out})
	return out, err
}

// ConfigHistory lists app's config revisions, newest first.
func (c *Client) ConfigHistory(ctx context.Context, app string) ([]api.ConfigRevision, error) {
	var out []api.ConfigRevision
	_, err := c.do(ctx, call{method: http.MethodGet, path: path(api.PathConfigHistory, app), out: &out})
	return out, err
}

// ConfigDiff lists what differs between revisions from and to (every
// scope, or group's view).
func (c *Client) ConfigDiff(ctx context.Context, app, group string, from, to int) ([]api.ConfigDiff, error) {
	q := url.Values{"from": {strconv.Itoa(from)}, "to": {strconv.Itoa(to)}}
	if group != "" {
		q.Set("group", group)
	}
	var out []api.ConfigDiff
	_, err := c.do(ctx, call{method: http.MethodGet, path: path(api.PathConfigDiff, app), query: q, out: &out})
	return out, err
}
