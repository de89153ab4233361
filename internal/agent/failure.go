package agent

import (
	"errors"

	"github.com/ferrydeploy/ferry"
	"github.com/ferrydeploy/ferry/internal/agent/hook"
)

// stepError is an error that knows which step of a release failed, so the
// agent reports a ferry.Failure instead of prose for the server to parse.
type stepError struct {
	kind  ferry.FailureKind
	check string // what failed: "web.2", "post hook"
	err   error
}

func (e *stepError) Error() string { return e.err.Error() }
func (e *stepError) Unwrap() error { return e.err }

// step marks err as a failure of kind (nil stays nil; an error already
// marked keeps its own kind).
func step(kind ferry.FailureKind, check string, err error) error {
	var se *stepError
	if err == nil || errors.As(err, &se) {
		return err
	}
	return &stepError{kind: kind, check: check, err: err}
}

// failureOf is err as the Failure of release: its kind where a step marked
// it, FailOther where none did.
func failureOf(err error, release string) *ferry.Failure {
	f := &ferry.Failure{Kind: ferry.FailOther, Release: release, Message: err.Error()}
	var se *stepError
	if errors.As(err, &se) {
		f.Kind, f.Check = se.kind, se.check
	}
	var he *hook.Error
	if errors.As(err, &he) {
		f.Kind, f.Check, f.Output = ferry.FailHook, he.Phase+" hook `"+he.Command+"`", he.Output
	}
	return f
}
