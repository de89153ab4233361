package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/signature"
)

// Status returns hosts × apps as the agents last reported; app "" is all.
func (c *Client) Status(ctx context.Context, app string) (api.Status, error) {
	q := url.Values{}
	if app != "" {
		q.Set("app", app)
	}
	var st api.Status
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathStatus, query: q, out: &st})
	return st, err
}

// Apps lists the apps the server knows and which release each group runs.
func (c *Client) Apps(ctx context.Context) ([]api.App, error) {
	var out []api.App
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathApps, out: &out})
	return out, err
}

// Releases lists app's releases.
func (c *Client) Releases(ctx context.Context, app string) ([]api.Release, error) {
	var out []api.Release
	_, err := c.do(ctx, call{method: http.MethodGet, path: path(api.PathReleases, app), out: &out})
	return out, err
}

// Tokens lists API tokens, without their secrets.
func (c *Client) Tokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathTokens, out: &out})
	return out, err
}

// CreateToken creates an API token. Its Secret is in the answer only: the
// server keeps a hash.
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (api.TokenCreated, error) {
	var out api.TokenCreated
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathTokens, body: req, out: &out})
	return out, err
}

// RevokeToken revokes token id; the server refuses it from then on.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, path: path(api.PathToken, id)})
	return err
}

// CreateJoinToken creates a token agents join req.Groups with.
func (c *Client) CreateJoinToken(ctx context.Context, req api.JoinTokenRequest) (api.TokenCreated, error) {
	var out api.TokenCreated
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathJoinTokens, body: req, out: &out})
	return out, err
}

// Locks lists the deploy locks held now.
func (c *Client) Locks(ctx context.Context) ([]api.Lock, error) {
	var out []api.Lock
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathLocks, out: &out})
	return out, err
}

// BreakLock releases the deploy lock of app × group (admin).
func (c *Client) BreakLock(ctx context.Context, app, group string) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, path: path(api.PathLock, app, group)})
	return err
}

// Audit returns the audit events.
// Audit returns the newest limit audit events, oldest first; 0 means all.
func (c *Client) Audit(ctx context.Context, limit int) ([]api.AuditEvent, error) {
	return c.AuditOf(ctx, AuditQuery{Limit: limit})
}

// AuditQuery selects audit events: the newest Limit (0: all) of those that
// touched App, Group and were made by Who, each when given.
type AuditQuery struct {
	App, Group, Who string
	Limit           int
}

// AuditOf returns the audit events q selects, oldest first.
func (c *Client) AuditOf(ctx context.Context, q AuditQuery) ([]api.AuditEvent, error) {
	var out []api.AuditEvent
	v := url.Values{"limit": {strconv.Itoa(q.Limit)}}
	for k, s := range map[string]string{"app": q.App, "group": q.Group, "who": q.Who} {
		if s != "" {
			v.Set(k, s)
		}
	}
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathAudit, query: v, out: &out})
	return out, err
}

// Whoami returns the record of this client's own credential.
func (c *Client) Whoami(ctx context.Context) (api.Token, error) {
	var out api.Token
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathWhoami, out: &out})
	return out, err
}

// MakeRelease makes (or finds) the release a deploy with these selectors
// would, without deploying it.
func (c *Client) MakeRelease(ctx context.Context, app string, req api.ReleaseRequest) (api.Release, error) {
	var out api.Release
	_, err := c.do(ctx, call{method: http.MethodPost, path: path(api.PathReleases, app), body: req, out: &out})
	return out, err
}

// SignRelease attaches sig to release n of app.
func (c *Client) SignRelease(ctx context.Context, app string, n int, sig signature.Signature) (api.Release, error) {
	var out api.Release
	_, err := c.do(ctx, call{method: http.MethodPost, path: path(api.PathSignatures, app, strconv.Itoa(n)), body: sig, out: &out})
	return out, err
}

// GC removes the artifacts no release references, keeping each app's
// req.Keep newest and those younger than req.MinAge (admin).
func (c *Client) GC(ctx context.Context, req api.GCRequest) (api.GCResult, error) {
	var out api.GCResult
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathGC, body: req, out: &out})
	return out, err
}

// JoinTokens lists the join tokens within this client's scope.
func (c *Client) JoinTokens(ctx context.Context) ([]api.Token, error) {
	var out []api.Token
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathJoinTokens, out: &out})
	return out, err
}

// RemoveHost forgets host name: its credential, desired state and report.
func (c *Client) RemoveHost(ctx context.Context, name string) error {
	_, err := c.do(ctx, call{method: http.MethodDelete, path: path(api.PathHost, name)})
	return err
}
