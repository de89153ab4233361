package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/api"
	"github.com/ferrydeploy/ferry/internal/repo"
)

func unmarshalBytes(b []byte, v any) error {
	if b == nil {
		return nil
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return nil
}

// save stores rec. Promoted is the one field others change (promote), so
// it is merged rather than overwritten.
func (o *Orchestrator) save(ctx context.Context, rec *repo.Deployment) error {
	cur, err := o.repo.UpdateDeployment(ctx, rec.ID, func(cur *repo.Deployment) error {
		promoted := cur.Promoted || rec.Promoted
		*cur = *rec
		cur.Promoted = promoted
		return nil
	})
	rec.Promoted = cur.Promoted
	return err
}

// finish records rec's end.
func (o *Orchestrator) finish(ctx context.Context, rec *repo.Deployment, state ferry.DeploymentState, outcome ferry.Outcome) error {
	rec.State, rec.Ended = state, time.Now().UTC()
	if !rec.Auto {
		o.letGoOf(rec.ID)
	}
	if !rec.Auto {
		o.setOutcome(ctx, rec.App, rec.Release, outcome)
	}
	if err := o.save(ctx, rec); err != nil {
		return err
	}
	if !rec.Auto {
		if _, err := o.pruneDeployments(ctx, rec.App, rec.Group, time.Now()); err != nil {
			o.log.Warn("prune deployments", logApp, rec.App, logGroup, rec.Group, logErr, err)
		}
	}
	o.log.Info("deployment ended", logDeployment, rec.ID, logApp, rec.App, logGroup, rec.Group, "state", state, logErr, rec.Error)
	o.audit(ctx, api.AuditEvent{Action: "deployment." + string(state), Target: "deployment/" + rec.ID, Detail: rec.Error, App: rec.App, Group: rec.Group})
	return nil
}

// succeed makes rec's release the group's and gives it to the hosts that
// joined the group while it rolled out.
func (o *Orchestrator) succeed(ctx context.Context, rec *repo.Deployment) error {
	if err := o.repo.SetGroupRelease(ctx, repo.GroupRelease{App: rec.App, Group: rec.Group, Release: rec.Release, SHA256: rec.SHA256, Deployment: rec.ID}); err != nil {
		return err
	}
	if !rec.Auto {
		hosts, err := o.repo.GroupHosts(ctx, rec.Group)
		if err != nil {
			return err
		}
		var late []string // joined the group after the rollout began
		for _, h := range hosts {
			if _, ok := rec.Hosts[h.Name]; !ok {
				late = append(late, h.Name)
			}
		}
		if err := o.repo.SetDesiredMany(ctx, late, rec.App, repo.DesiredEntry{Release: rec.Release, SHA256: rec.SHA256, Group: rec.Group}); err != nil {
			return err
		}
	}
	if rec.Auto {
		return o.finish(ctx, rec, ferry.DeploySucceeded, ferry.OutcomeNone)
	}
	return o.finish(ctx, rec, ferry.DeploySucceeded, ferry.OutcomeHealthy)
}
