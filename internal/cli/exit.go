package cli

import (
	"context"
	"errors"

	"github.com/ferrydeploy/ferry"
)

// Exit codes, documented in the README.
const (
	ExitOK          = 0
	ExitFailure     = 1
	ExitUsage       = 2
	ExitLocked      = 3
	ExitUnhealthy   = 4
	ExitInterrupted = 130
)

// ExitCode maps an error to ferry's exit code: the one place that does.
func ExitCode(ctx context.Context, err error) int {
	if err == nil {
		return ExitOK
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		return ExitInterrupted
	}
	var u usageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	switch ferry.ErrorCode(err) {
	case ferry.ELOCKED:
		return ExitLocked
	case ferry.EHEALTH:
		return ExitUnhealthy
	}
	return ExitFailure
}
