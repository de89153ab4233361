package api

import (
	"net/http"

	"github.com/ferrydeploy/ferry"
)

// statuses is the one table between ferry's error kinds and HTTP statuses;
// the server answers with it and the client reads answers without a body
// back through it.
var statuses = map[string]int{
	ferry.EINVALID:     http.StatusBadRequest,
	ferry.EUNAUTH:      http.StatusUnauthorized,
	ferry.EDENIED:      http.StatusForbidden,
	ferry.ENOTFOUND:    http.StatusNotFound,
	ferry.ELOCKED:      http.StatusConflict,
	ferry.EHEALTH:      http.StatusUnprocessableEntity,
	ferry.EUNAVAILABLE: http.StatusServiceUnavailable,
	ferry.ETOOLARGE:    http.StatusRequestEntityTooLarge,
}

// HTTPStatus is the status an error of kind code is answered with.
func HTTPStatus(code string) int {
	if s, ok := statuses[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// ErrorKind is the error kind an HTTP status stands for.
func ErrorKind(status int) string {
	for code, s := range statuses {
		if s == status {
			return code
		}
	}
	return ferry.EINTERNAL
}
