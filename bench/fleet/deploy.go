package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

// DeployResult is one release rolled out to the whole fleet.
type DeployResult struct {
	Version string `json:"version"`
	Release int    `json:"release"`
	Bytes   int64  `json:"bytes"` // the artifact's size
	// Request is how long the deploy call took (the server answers once
	// the deployment is recorded; the rollout runs on).
	Request time.Duration `json:"request"`
	// ToAllHealthy is from sending the deploy request until the
	// deployment, followed with blocking gets, says succeeded: every host
	// runs the release healthy.
	ToAllHealthy time.Duration `json:"to_all_healthy"`
	State        string        `json:"state"`
	// Propagation is, per agent, from the deploy call's return until its
	// desired-state source handed the agent the document naming the new
	// artifact; FromSend is the same from when the request was sent.
	Propagation Stats `json:"propagation"`
	FromSend    Stats `json:"propagation_from_send"`
	Delivered   int   `json:"delivered"` // agents that got the document
	// PerHost is FromSend per host in name order, the order the server
	// writes the hosts' desired states in (-1: never delivered); PerHostSlope
	// is the least-squares slope of it against the host's place in that
	// order, and R2 how well a line fits: a server that writes host after
	// host shows as a steady cost per host.
	PerHost      []time.Duration `json:"per_host"`
	PerHostSlope time.Duration   `json:"per_host_slope"`
	PerHostR2    float64         `json:"per_host_r2"`
	// HostHealthy is, per host, from sending the request until the
	// deployment first showed the host healthy.
	HostHealthy Stats `json:"host_healthy"`
	// Downloads: every agent fetches the artifact from the one server.
	Downloads Downloads     `json:"downloads"`
	CPU       time.Duration `json:"cpu"` // this process (agents, and the server unless -server-bin), utime+stime over the deploy
	// Server and S3 are the -server-bin and -s3 processes over the deploy:
	// CPU time and bytes written (files and sockets).
	Server     usage    `json:"server"`
	S3         usage    `json:"s3"`
	LoadBefore string   `json:"load_before"`
	LoadAfter  string   `json:"load_after"`
	After      Snapshot `json:"after"`
	Error      string   `json:"error,omitempty"`
}

// Downloads sums up the agents' fetches of one artifact.
type Downloads struct {
	Count int           `json:"count"`
	Bytes int64         `json:"bytes"`
	Span  time.Duration `json:"span"`      // first request → last body's end
	MBps  float64       `json:"mib_per_s"` // Bytes / Span: the server's throughput while it served them
	Each  Stats         `json:"each"`      // one download's time
}

// deploy rolls a out with strategy all and measures it.
func (b *Bench) deploy(ctx context.Context, a Artifact) (r DeployResult, err error) {
	r.Version, r.Bytes = a.Version, a.Size
	defer func() {
		if err != nil {
			r.Error = err.Error()
		}
	}()
	r.LoadBefore = loadavg()
	cpu0, srv0, s30 := selfCPU(), b.srvProc.usage(), b.s3Proc.usage()
	sent := time.Now()
	d, err := b.admin.Deploy(ctx, api.DeployRequest{App: appName, Group: group, Version: a.Version, Strategy: api.StrategyAll,
		HealthTimeout: b.Opt.HealthTimeout, WaitLock: time.Minute})
	returned := time.Now()
	r.Request = returned.Sub(sent)
	if err != nil {
		return r, fmt.Errorf("deploy %s: %w", a.Version, err)
	}
	r.Release = d.Release
	healthy := map[string]time.Time{}
	var index uint64
	deadline := time.Now().Add(b.Opt.HealthTimeout + time.Minute)
	for {
		now := time.Now()
		for h, hr := range d.Hosts {
			if _, ok := healthy[h]; !ok && hr.State == "healthy" {
				healthy[h] = now
			}
		}
		if d.State != api.DeployRunning {
			break
		}
		if now.After(deadline) {
			return r, fmt.Errorf("deploy %s: still %s after %v", a.Version, d.State, b.Opt.HealthTimeout+time.Minute)
		}
		d, index, err = b.admin.Deployment(ctx, d.ID, index, 30*time.Second)
		if err != nil {
			return r, fmt.Errorf("deploy %s: follow: %w", a.Version, err)
		}
	}
	r.ToAllHealthy = time.Since(sent)
	r.State = string(d.State)
	r.CPU = selfCPU() - cpu0
	r.Server, r.S3 = b.srvProc.usage().sub(srv0), b.s3Proc.usage().sub(s30)
	r.LoadAfter = loadavg()
	r.After = snapshot()

	var prop, fromSend, host, each []time.Duration
	first, last := time.Time{}, time.Time{}
	for _, m := range b.members {
		if t, ok := m.deliveredAt(a.SHA256); ok {
			prop = append(prop, t.Sub(returned))
			fromSend = append(fromSend, t.Sub(sent))
			r.PerHost = append(r.PerHost, t.Sub(sent))
		} else {
			r.PerHost = append(r.PerHost, -1)
		}
		if t, ok := healthy[m.name]; ok {
			host = append(host, t.Sub(sent))
		}
		if dl, ok := m.downloadOf(a.SHA256, sent); ok {
			r.Downloads.Count++
			r.Downloads.Bytes += dl.Bytes
			each = append(each, dl.End.Sub(dl.Start))
			if first.IsZero() || dl.Start.Before(first) {
				first = dl.Start
			}
			if dl.End.After(last) {
				last = dl.End
			}
		}
	}
	r.Delivered = len(prop)
	r.PerHostSlope, r.PerHostR2 = fitLine(r.PerHost)
	r.Propagation, r.FromSend, r.HostHealthy, r.Downloads.Each = stats(prop), stats(fromSend), stats(host), stats(each)
	if r.Downloads.Count > 0 {
		r.Downloads.Span = last.Sub(first)
		r.Downloads.MBps = float64(r.Downloads.Bytes) / (1 << 20) / r.Downloads.Span.Seconds()
	}
	if d.State != api.DeploySucceeded {
		return r, fmt.Errorf("deploy %s: %s: %s", a.Version, d.State, d.Error)
	}
	if r.Delivered != b.N {
		return r, fmt.Errorf("deploy %s: succeeded, yet only %d of %d agents' sources delivered it", a.Version, r.Delivered, b.N)
	}
	return r, nil
}

// Stats summarises durations; percentiles by nearest rank.
type Stats struct {
	N   int           `json:"n"`
	Min time.Duration `json:"min"`
	P50 time.Duration `json:"p50"`
	P90 time.Duration `json:"p90"`
	P99 time.Duration `json:"p99"`
	Max time.Duration `json:"max"`
}

func stats(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Stats{N: len(s), Min: s[0], P50: rank(0.50), P90: rank(0.90), P99: rank(0.99), Max: s[len(s)-1]}
}

// fitLine fits y = a + b·i over the delivered entries of ys and returns
// the slope b and R².
func fitLine(ys []time.Duration) (time.Duration, float64) {
	var n, sx, sy, sxx, sxy, syy float64
	for i, d := range ys {
		if d < 0 {
			continue
		}
		x, y := float64(i), float64(d)
		n++
		sx += x
		sy += y
		sxx += x * x
		sxy += x * y
		syy += y * y
	}
	if n < 3 {
		return 0, 0
	}
	vx, vy, cxy := sxx-sx*sx/n, syy-sy*sy/n, sxy-sx*sy/n
	if vx == 0 || vy == 0 {
		return 0, 0
	}
	return time.Duration(cxy / vx), cxy * cxy / (vx * vy)
}
