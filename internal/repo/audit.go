package repo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"

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
