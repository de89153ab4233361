package main

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"
)

// Series is -changes desired-state changes of one app, alternating between
// two artifacts.
type Series struct {
	Name    string   `json:"name"`
	App     string   `json:"app"`
	Changes []Change `json:"changes"`
	// Other apps whose instance pids changed during the series (must be none).
	OthersChanged []string `json:"others_changed"`
	// /proc/loadavg at the start and the end of the series.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// Change is one timed change, measured from the rename of the new
// desired-state file.
type Change struct {
	To string `json:"to"` // artifact version
	// Fresh: the release was not installed yet (the artifact was unpacked);
	// later changes re-activate an installed release.
	Fresh bool `json:"fresh"`
	// ToPIDs: every new instance is in /proc, a child of the agent, with
	// the new release as its working directory and the app's command line.
	ToPIDs time.Duration `json:"to_pids"`
	// ToRunning: the agent's status says the app runs the new artifact
	// with every instance healthy (its health gate passed).
	ToRunning time.Duration `json:"to_running"`
	// PIDsMatch: the pids found in /proc are the ones the agent reports.
	PIDsMatch bool `json:"pids_match"`
}

// series changes app's artifact -changes times, alternating arts[1],
// arts[0], …, timing each change; app must run arts[0] now.
func (b *Bench) series(ctx context.Context, name string, arts [2]Artifact) (Series, error) {
	o := b.Opt
	app := arts[0].App
	s := Series{Name: name, App: app, LoadStart: loadavg()}
	b.progress("series %q: %d changes of %s", name, o.Changes, app)
	st, err := b.agent.status(ctx)
	if err != nil {
		return s, err
	}
	others := map[string][]int{}
	for n := range b.current {
		if n != app {
			others[n] = st.pids(n)
		}
	}
	installed := map[string]bool{arts[0].SHA256: true}
	scanner := newScanner(b.agent.pid(), isInstance)
	scanner.scan("", "") // learn every process already there
	releases := filepath.Join(b.agent.root, "apps", app, "releases") + "/"
	for k := 1; k <= o.Changes; k++ {
		to := arts[k%2]
		b.set(to)
		c := Change{To: to.Version, Fresh: !installed[to.SHA256]}
		installed[to.SHA256] = true
		var found []*instance
		if err := writeAtomic(b.desired, b.doc()); err != nil {
			return s, err
		}
		t0 := time.Now()
		deadline := t0.Add(time.Minute)
		var reported []int
		for c.ToPIDs == 0 || c.ToRunning == 0 {
			if c.ToPIDs == 0 {
				if found = scanner.scan(releases, "-"+to.SHA256[:8]); len(found) >= o.Scale {
					c.ToPIDs = time.Since(t0)
				}
			}
			if c.ToRunning == 0 {
				if st, err := b.agent.status(ctx); err == nil && st.running(app, to.SHA256, o.Scale) {
					c.ToRunning = time.Since(t0)
					reported = st.pids(app)
				}
			}
			if c.ToPIDs > 0 && c.ToRunning > 0 {
				break
			}
			if time.Now().After(deadline) {
				st, _ := b.agent.status(ctx)
				var seen []string
				for _, pid := range st.pids(app) {
					seen = append(seen, fmt.Sprintf("%d=%+v", pid, scanner.known[pid]))
				}
				return s, fmt.Errorf("change %d of %s to %s: not running within a minute (pids after %v, running after %v); status %s; in /proc %v; agent log:\n%s",
					k, app, to.Version, c.ToPIDs, c.ToRunning, describe(st), seen, tail(b.agent.log, 3000))
			}
			select {
			case <-ctx.Done():
				return s, ctx.Err()
			case <-b.agent.exited:
				return s, fmt.Errorf("the agent exited; its log:\n%s", tail(b.agent.log, 3000))
			case <-time.After(o.Poll):
			}
		}
		var pids []int
		for _, in := range found {
			pids = append(pids, in.pid)
		}
		slices.Sort(pids)
		c.PIDsMatch = slices.Equal(pids, reported)
		s.Changes = append(s.Changes, c)
		b.progress("  %2d → %s%s: pids %6.1f ms, running %7.1f ms%s", k, to.Version, map[bool]string{true: " (install)"}[c.Fresh],
			ms(c.ToPIDs), ms(c.ToRunning), map[bool]string{false: fmt.Sprintf(" (pids in /proc %v, agent says %v)", pids, reported)}[c.PIDsMatch])
		time.Sleep(o.Settle)
	}
	s.LoadEnd = loadavg()
	st, err = b.agent.status(ctx)
	if err != nil {
		return s, err
	}
	for _, n := range sortedKeys(others) {
		if got := st.pids(n); !slices.Equal(got, others[n]) {
			s.OthersChanged = append(s.OthersChanged, fmt.Sprintf("%s: %v → %v", n, others[n], got))
		}
	}
	return s, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
