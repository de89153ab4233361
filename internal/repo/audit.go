package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ferrydeploy/ferry/api"
)

// auditKey orders events by time: the key alone says how old an event
// is, so retention decodes nothing.
func auditKey(ev api.AuditEvent) string {
	b := make([]byte, 4)
	rand.Read(b)
	return fmt.Sprintf("%s%019d-%s", PrefixAudit, ev.Time.UnixNano(), hex.EncodeToString(b))
}

// AppendAudit stores ev.
func (r *Repo) AppendAudit(ctx context.Context, ev api.AuditEvent) error {
	if err := PutJSON(ctx, r.st, auditKey(ev), ev); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// Audit returns the newest limit events keep accepts (0: all), oldest
// first. It decodes from the newest back and stops once it has limit.
func (r *Repo) Audit(ctx context.Context, keep func(api.AuditEvent) bool, limit int) ([]api.AuditEvent, error) {
	kvs, _, err := r.st.List(ctx, PrefixAudit)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []api.AuditEvent
	for i := len(kvs) - 1; i >= 0 && (limit <= 0 || len(out) < limit); i-- {
		var ev api.AuditEvent
		if err := Unmarshal(kvs[i], &ev); err != nil {
			return nil, err
		}
		if keep(ev) {
			out = append(out, ev)
		}
	}
	slices.Reverse(out)
	if out == nil {
		out = []api.AuditEvent{}
	}
	return out, nil
}

// auditTime is when the event under key happened, from the key alone.
func auditTime(key string) (time.Time, bool) {
	digits, _, ok := strings.Cut(strings.TrimPrefix(key, PrefixAudit), "-")
	n, err := strconv.ParseInt(digits, 10, 64)
	if !ok || err != nil {
		return time.Time{}, false
	}
	return time.Unix(0, n), true
}

// PruneAudit removes the events from before before, and the oldest beyond
// the newest keep (keep 0: no count limit), and returns how many went. It
// reads the events' keys, not their values.
func (r *Repo) PruneAudit(ctx context.Context, before time.Time, keep int) (int, error) {
	kvs, _, err := r.st.List(ctx, PrefixAudit)
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	n := 0
	for i, kv := range kvs { // oldest first
		t, ok := auditTime(kv.Key)
		if !(keep > 0 && len(kvs)-i > keep) && !(ok && t.Before(before)) {
			break // every later key is newer and within the count
		}
		if err := r.st.Delete(ctx, kv.Key); err != nil {
			return n, fmt.Errorf("audit: %w", err)
		}
		n++
	}
	return n, nil
}
