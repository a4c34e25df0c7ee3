package http

import (
	"errors"
	"net/http"

	"github.com/keyledger/keyledger/domain"
)

// codes is the one map from an error code to its HTTP status.
var codes = map[string]int{
	domain.EINVALID:         http.StatusBadRequest,
	domain.EUNAUTHENTICATED: http.StatusUnauthorized,
	domain.EFORBIDDEN:       http.StatusForbidden,
	domain.ENOTFOUND:        http.StatusNotFound,
	domain.ECONFLICT:        http.StatusConflict,
	domain.EKEYREVOKED:      http.StatusConflict,
	domain.EPRECONDITION:    http.StatusPreconditionFailed,
	domain.ETOOLARGE:        http.StatusRequestEntityTooLarge,
	domain.EUNSUPPORTED:     http.StatusUnsupportedMediaType,
	domain.ERATELIMITED:     http.StatusTooManyRequests,
	domain.EINTERNAL:        http.StatusInternalServerError,
	domain.EUNAVAILABLE:     http.StatusServiceUnavailable,
}

// ErrorStatus returns the HTTP status of an error code.
func ErrorStatus(code string) int {
	if s, ok := codes[code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fail answers with err's code and public message. This is the one place
// where errors are logged: internal ones with their cause, which never
// reaches the caller.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := domain.ErrorCode(err)
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		code, err = domain.ETOOLARGE, domain.Errorf(domain.ETOOLARGE, "request body is over %d bytes", maxErr.Limit)
	}
	switch code {
	case domain.EINTERNAL:
		s.log.ErrorContext(r.Context(), "internal error", "err", err)
	case domain.EUNAVAILABLE:
		s.log.WarnContext(r.Context(), "unavailable", "err", err)
		w.Header()["Retry-After"] = retryAfter1s
	case domain.EUNAUTHENTICATED:
		w.Header().Set("WWW-Authenticate", `Bearer realm="keyledger"`)
	}
	writeJSON(w, ErrorStatus(code), errorBody{errorDetail{Code: code, Message: domain.ErrorMessage(err)}})
}
