package repo

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/state"
)

// Host is a host that joined.
type Host struct {
	Name    string    `json:"name"`
	Groups  []string  `json:"groups"`
	TokenID string    `json:"token_id"`
	Joined  time.Time `json:"joined"`
}

func hostKey(name string) string            { return PrefixHosts + name }
func groupIdxKey(group, host string) string { return PrefixGroupIdx + group + "/" + host }

// Host returns the host named name and its record's mod revision;
// ENOTFOUND when no such host joined.
func (r *Repo) Host(ctx context.Context, name string) (Host, int64, error) {
	var h Host
	rev, err := GetJSON(ctx, r.st, hostKey(name), &h)
	if ferry.ErrorCode(err) == ferry.ENOTFOUND {
		return h, 0, ferry.Errorf(ferry.ENOTFOUND, "no host %s", name)
	}
	if err != nil {
		return h, 0, fmt.Errorf("host %s: %w", name, err)
	}
	return h, rev, nil
}

// Hosts lists every host by name.
func (r *Repo) Hosts(ctx context.Context) ([]Host, error) {
	hosts, err := ListJSON[Host](ctx, r.st, PrefixHosts)
	if err != nil {
		return nil, fmt.Errorf("hosts: %w", err)
	}
	return hosts, nil
}

// GroupHosts lists the hosts of group by name, through the group's index
// keys: a rollout to a group of ten does not read a fleet of thousands.
// The host record is the truth; an index key left by a crash between a
// host's change and its cleanup names a host that is gone or left the
// group, and is passed over.
func (r *Repo) GroupHosts(ctx context.Context, group string) ([]Host, error) {
	prefix := PrefixGroupIdx + group + "/"
	kvs, _, err := r.st.List(ctx, prefix)
	if err != nil {
		return nil, fmt.Errorf("hosts of %s: %w", group, err)
	}
	out := make([]Host, 0, len(kvs))
	for _, kv := range kvs {
		h, _, err := r.Host(ctx, strings.TrimPrefix(kv.Key, prefix))
		if ferry.ErrorCode(err) == ferry.ENOTFOUND {
			continue
		}
		if err != nil {
			return nil, err
		}
		if slices.Contains(h.Groups, group) {
			out = append(out, h)
		}
	}
	return out, nil
}

// PutHost writes h only if its record's mod revision is still rev (0: no
// such host yet), with its group index keys in the same transaction; ok
// is false, with no error, when the record changed meanwhile. The index
// keys of groups the host left are removed after.
func (r *Repo) PutHost(ctx context.Context, h Host, rev int64) (ok bool, err error) {
	if len(h.Groups)+1 > state.MaxSwaps {
		return false, ferry.Errorf(ferry.EINVALID, "host %s: in %d groups, more than %d", h.Name, len(h.Groups), state.MaxSwaps-1)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return false, fmt.Errorf("host %s: %w", h.Name, err)
	}
	for {
		var old Host
		kv, err := r.st.Get(ctx, hostKey(h.Name))
		switch {
		case err == nil:
			if kv.Rev != rev {
				return false, nil
			}
			if err := Unmarshal(kv, &old); err != nil {
				return false, err
			}
		case ferry.ErrorCode(err) != ferry.ENOTFOUND:
			return false, fmt.Errorf("host %s: %w", h.Name, err)
		case rev != 0:
			return false, nil // removed meanwhile
		}
		keys := make([]string, len(h.Groups))
		for i, g := range h.Groups {
			keys[i] = groupIdxKey(g, h.Name)
		}
		revs, err := r.revs(ctx, keys)
		if err != nil {
			return false, fmt.Errorf("host %s: %w", h.Name, err)
		}
		swaps := []state.Swap{{Key: hostKey(h.Name), Rev: rev, Value: hb}}
		for i, k := range keys {
			swaps = append(swaps, state.Swap{Key: k, Rev: revs[i], Value: []byte{}})
		}
		_, ok, err := r.st.CompareAndSwapMany(ctx, swaps)
		if err != nil {
			return false, fmt.Errorf("host %s: %w", h.Name, err)
		}
		if !ok {
			continue // the record or an index key changed: look again
		}
		for _, g := range old.Groups {
			if !slices.Contains(h.Groups, g) {
				if err := r.st.Delete(ctx, groupIdxKey(g, h.Name)); err != nil {
					return true, fmt.Errorf("host %s: %w", h.Name, err)
				}
			}
		}
		return true, nil
	}
}

// ForgetHost removes what the state holds of h: its desired state, its
// last report, its record and its index keys. The record goes before its
// index keys, so a crash between them leaves keys readers pass over.
func (r *Repo) ForgetHost(ctx context.Context, h Host) error {
	keys := []string{PrefixDesired + h.Name, PrefixReports + h.Name, hostKey(h.Name)}
	for _, g := range h.Groups {
		keys = append(keys, groupIdxKey(g, h.Name))
	}
	for _, k := range keys {
		if err := r.st.Delete(ctx, k); err != nil {
			return fmt.Errorf("host %s: %w", h.Name, err)
		}
	}
	return nil
}

// Report is a host's last report.
type Report struct {
	State    api.HostReport `json:"state"`
	LastSeen time.Time      `json:"last_seen"`
	From     string         `json:"from"`
}

// Reports returns every host's last report by host name, and the store
// revision the listing reflects.
func (r *Repo) Reports(ctx context.Context) (map[string]Report, int64, error) {
	kvs, rev, err := r.st.List(ctx, PrefixReports)
	if err != nil {
		return nil, 0, fmt.Errorf("reports: %w", err)
	}
	out := make(map[string]Report, len(kvs))
	for _, kv := range kvs {
		var rr Report
		if err := Unmarshal(kv, &rr); err != nil {
			return nil, 0, err
		}
		out[strings.TrimPrefix(kv.Key, PrefixReports)] = rr
	}
	return out, rev, nil
}

// manyReports is from how many hosts on HostReports lists every report
// rather than reading each: one listing costs less than that many reads.
const manyReports = 64

// HostReports returns the last reports of hosts (those that have one),
// and a store revision at or before the reads: a watch from it misses no
// later report.
func (r *Repo) HostReports(ctx context.Context, hosts []string) (map[string]Report, int64, error) {
	if len(hosts) >= manyReports {
		all, rev, err := r.Reports(ctx)
		if err != nil {
			return nil, 0, err
		}
		out := make(map[string]Report, len(hosts))
		for _, h := range hosts {
			if rr, ok := all[h]; ok {
				out[h] = rr
			}
		}
		return out, rev, nil
	}
	rev, err := r.st.Rev(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("reports: %w", err)
	}
	out := make(map[string]Report, len(hosts))
	for _, h := range hosts {
		var rr Report
		found, err := Lookup(ctx, r.st, PrefixReports+h, &rr)
		if err != nil {
			return nil, 0, fmt.Errorf("report of %s: %w", h, err)
		}
		if found {
			out[h] = rr
		}
	}
	return out, rev, nil
}

// PutReports stores reports by host, at most state.MaxSwaps of them, in
// one transaction.
func (r *Repo) PutReports(ctx context.Context, reps map[string]Report) error {
	hosts := slices.Sorted(maps.Keys(reps))
	vals := make([][]byte, len(hosts))
	for i, h := range hosts {
		b, err := json.Marshal(reps[h])
		if err != nil {
			return fmt.Errorf("report of %s: %w", h, err)
		}
		vals[i] = b
	}
	keys := make([]string, len(hosts))
	for i, h := range hosts {
		keys[i] = PrefixReports + h
	}
	for {
		revs, err := r.revs(ctx, keys)
		if err != nil {
			return fmt.Errorf("reports: %w", err)
		}
		swaps := make([]state.Swap, len(keys))
		for i := range keys {
			swaps[i] = state.Swap{Key: keys[i], Rev: revs[i], Value: vals[i]}
		}
		_, ok, err := r.st.CompareAndSwapMany(ctx, swaps)
		if err != nil {
			return fmt.Errorf("reports: %w", err)
		}
		if ok {
			return nil
		}
		// Another server stored a report of one of these hosts meanwhile
		// (the agent moved): read the revisions again.
	}
}

// Desired is what the server wants on one host: per app, a release.
// One key per host, so its mod revision is the index of the host's
// blocking queries.
type Desired struct {
	Apps map[string]DesiredEntry `json:"apps"`
}

// DesiredEntry is one app's release on a host.
type DesiredEntry struct {
	Release int    `json:"release"`
	SHA256  string `json:"sha256"`
	Group   string `json:"group,omitempty"` // whose config the release runs with
	// Signatures counts the release's signatures when this entry was
	// last written: adding one changes the entry, and so wakes the
	// host's blocking query with the signed document.
	Signatures int `json:"signatures,omitempty"`
}

// Names reports whether d wants artifact sum anywhere.
func (d Desired) Names(sum string) bool {
	for _, e := range d.Apps {
		if e.SHA256 == sum {
			return true
		}
	}
	return false
}

// Set sets (e.Release > 0) or removes app in d; it reports whether that
// changed anything. An app runs on a host through one group at a time:
// an entry another group set is neither replaced nor removed.
func (d *Desired) Set(app string, e DesiredEntry) bool {
	cur, ok := d.Apps[app]
	if (e.Release == 0 && !ok) || (e.Release != 0 && ok && cur == e) {
		return false
	}
	if ok && cur.Group != "" && e.Group != "" && cur.Group != e.Group {
		return false
	}
	if d.Apps == nil {
		d.Apps = map[string]DesiredEntry{}
	}
	if e.Release == 0 {
		delete(d.Apps, app)
	} else {
		d.Apps[app] = e
	}
	return true
}

// Desired returns host's desired state; empty when it has none.
func (r *Repo) Desired(ctx context.Context, host string) (Desired, error) {
	var d Desired
	if _, err := Lookup(ctx, r.st, PrefixDesired+host, &d); err != nil {
		return d, fmt.Errorf("desired state of %s: %w", host, err)
	}
	return d, nil
}

// AllDesired returns every host's desired state by host name.
func (r *Repo) AllDesired(ctx context.Context) (map[string]Desired, error) {
	kvs, _, err := r.st.List(ctx, PrefixDesired)
	if err != nil {
		return nil, fmt.Errorf("desired states: %w", err)
	}
	out := make(map[string]Desired, len(kvs))
	for _, kv := range kvs {
		var d Desired
		if err := Unmarshal(kv, &d); err != nil {
			return nil, err
		}
		out[strings.TrimPrefix(kv.Key, PrefixDesired)] = d
	}
	return out, nil
}

// UpdateDesired changes host's desired state by fn, which reports whether
// it changed anything.
func (r *Repo) UpdateDesired(ctx context.Context, host string, fn func(d *Desired) bool) error {
	_, err := Update(ctx, r.st, PrefixDesired+host, func(d *Desired, _ bool) error {
		if !fn(d) {
			return ErrSkip
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("desired state of %s: %w", host, err)
	}
	return nil
}

// SetDesired sets (e.Release > 0) or removes app on host's desired state;
// it reports whether that changed anything.
func (r *Repo) SetDesired(ctx context.Context, host, app string, e DesiredEntry) (bool, error) {
	changed := false
	err := r.UpdateDesired(ctx, host, func(d *Desired) bool {
		changed = d.Set(app, e)
		return changed
	})
	return changed, err
}

// SetDesiredMany is SetDesired on many hosts, state.MaxSwaps of them per
// transaction: a rollout's batch of a thousand hosts costs ten commits,
// not a thousand, and each chunk changes all of its hosts or none.
func (r *Repo) SetDesiredMany(ctx context.Context, hosts []string, app string, e DesiredEntry) error {
	for chunk := range slices.Chunk(hosts, state.MaxSwaps) {
		for {
			swaps := make([]state.Swap, 0, len(chunk))
			for _, h := range chunk {
				var d Desired
				rev, err := GetJSON(ctx, r.st, PrefixDesired+h, &d)
				if err != nil && ferry.ErrorCode(err) != ferry.ENOTFOUND {
					return fmt.Errorf("desired state of %s: %w", h, err)
				}
				if !d.Set(app, e) {
					continue
				}
				b, err := json.Marshal(d)
				if err != nil {
					return fmt.Errorf("desired state of %s: %w", h, err)
				}
				swaps = append(swaps, state.Swap{Key: PrefixDesired + h, Rev: rev, Value: b})
			}
			if len(swaps) == 0 {
				break
			}
			_, ok, err := r.st.CompareAndSwapMany(ctx, swaps)
			if err != nil {
				return fmt.Errorf("desired states: %w", err)
			}
			if ok {
				break
			}
			// A host's desired state changed meanwhile (a join, another
			// app's rollout): read the chunk again.
		}
	}
	return nil
}
