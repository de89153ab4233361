package ferry

import (
	"errors"
	"fmt"
)

// Error kinds. The CLI maps them to exit codes (internal/cli/exit.go) and the API to
// HTTP statuses, each in one place.
const (
	EINVALID     = "invalid"      // bad input: the message says what to fix
	ENOTFOUND    = "not_found"    // a named thing does not exist
	ELOCKED      = "locked"       // someone else holds the lock
	EHEALTH      = "unhealthy"    // health checks failed; rolled back
	EUNAUTH      = "unauthorized" // no valid credential
	EDENIED      = "forbidden"    // the credential may not do this
	EUNAVAILABLE = "unavailable"  // a dependency (the state store) cannot answer now; retry
	ECORRUPT     = "corrupt"      // stored bytes no longer match their digest
	ETRANSPORT   = "transport"    // no answer: the server could not be reached, or the connection broke; retry
	ETOOLARGE    = "too_large"    // over a size limit the server is configured with
	EINTERNAL    = "internal"
)

// Error is an error with a kind the user can act on.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// WrapError wraps err with a kind and a message.
func WrapError(code string, err error, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Err: err}
}

// ErrorCode returns the kind of the outermost *Error in err's chain,
// EINTERNAL for any other error and "" for nil.
func ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return EINTERNAL
}
