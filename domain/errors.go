package domain

import (
	"errors"
	"fmt"
)

// Error codes. Each is part of the public contract (PRODUCT.md): the HTTP
// layer maps every code to one status in one place.
const (
	EINVALID         = "invalid"
	EUNAUTHENTICATED = "unauthenticated"
	EFORBIDDEN       = "forbidden"
	ENOTFOUND        = "not_found"
	ECONFLICT        = "conflict"
	EKEYREVOKED      = "key_revoked"
	EPRECONDITION    = "precondition_failed"
	ETOOLARGE        = "too_large"
	EUNSUPPORTED     = "unsupported_media_type"
	ERATELIMITED     = "rate_limited"
	EINTERNAL        = "internal"
	EUNAVAILABLE     = "unavailable"
)

// Error is the one error type of keyledger. Message is safe to show to a
// caller; Err is the cause, kept for logs and errors.Is, never shown.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with a public message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error whose cause is err; the message is public, err is not.
func Wrap(code string, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error and "" for nil.
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

// ErrorMessage returns the public message of err; errors that are not an
// *Error get a generic message so that no internal detail leaks.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL {
		return e.Message
	}
	return "internal error"
}
