package client

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

// Deploy starts a deployment. The server waits up to req.WaitLock for the
// app × group lock; without it a held lock is an error of kind
// ferry.ELOCKED at once. The rollout runs on the server: Deploy returns
// when it has started, and Deployment follows it.
func (c *Client) Deploy(ctx context.Context, req api.DeployRequest) (api.Deployment, error) {
	var d api.Deployment
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathDeployments, body: req, out: &d, wait: req.WaitLock})
	return d, err
}

// Deployment returns deployment id. With index > 0 it is a blocking query:
// the server answers when the state's index passes index, or after wait.
// The returned index is the one to pass next time.
func (c *Client) Deployment(ctx context.Context, id string, index uint64, wait time.Duration) (api.Deployment, uint64, error) {
	var d api.Deployment
	h, err := c.do(ctx, call{method: http.MethodGet, path: path(api.PathDeployment, id),
		query: blockingQuery(index, wait), out: &d, wait: wait})
	return d, indexOf(h), err
}

// Deployments lists the deployments of app in group; "" matches any.
func (c *Client) Deployments(ctx context.Context, app, group string) ([]api.Deployment, error) {
	q := url.Values{}
	if app != "" {
		q.Set("app", app)
	}
	if group != "" {
		q.Set("group", group)
	}
	var out []api.Deployment
	_, err := c.do(ctx, call{method: http.MethodGet, path: api.PathDeployments, query: q, out: &out})
	return out, err
}

// Promote continues a canary deployment that waits in api.DeployWaiting.
func (c *Client) Promote(ctx context.Context, id string) (api.Deployment, error) {
	var d api.Deployment
	_, err := c.do(ctx, call{method: http.MethodPost, path: path(api.PathPromote, id), out: &d})
	return d, err
}

// Rollback starts a health-gated rollout of req.Release, or of the last
// release that was healthy on every host of the group.
func (c *Client) Rollback(ctx context.Context, req api.RollbackRequest) (api.Deployment, error) {
	var d api.Deployment
	_, err := c.do(ctx, call{method: http.MethodPost, path: api.PathRollback, body: req, out: &d})
	return d, err
}
