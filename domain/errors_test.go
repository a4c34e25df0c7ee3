package domain_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/keyledger/keyledger/domain"
)

func TestErrorCodeAndMessage(t *testing.T) {
	cause := errors.New("dial tcp 10.0.0.1:4222: refused")
	for _, tt := range []struct {
		name    string
		err     error
		code    string
		message string
	}{
		{"NilHasNoCode", nil, "", "internal error"},
		{"PlainErrorIsInternal", cause, domain.EINTERNAL, "internal error"},
		{"ErrorKeepsCodeAndMessage", domain.Errorf(domain.EINVALID, "name must be %d", 1), domain.EINVALID, "name must be 1"},
		{"WrappedErrorKeepsCode", fmt.Errorf("create: %w", domain.Errorf(domain.ENOTFOUND, "key not found")), domain.ENOTFOUND, "key not found"},
		{"WrapShowsMessageNotCause", domain.Wrap(domain.EUNAVAILABLE, cause, "store unavailable"), domain.EUNAVAILABLE, "store unavailable"},
		{"InternalMessageIsGeneric", domain.Wrap(domain.EINTERNAL, cause, "secret detail"), domain.EINTERNAL, "internal error"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got, want := domain.ErrorCode(tt.err), tt.code; got != want {
				t.Errorf("ErrorCode = %q, want %q", got, want)
			}
			if got, want := domain.ErrorMessage(tt.err), tt.message; got != want {
				t.Errorf("ErrorMessage = %q, want %q", got, want)
			}
		})
	}

	t.Run("WrapKeepsCauseForErrorsIs", func(t *testing.T) {
		err := domain.Wrap(domain.EUNAVAILABLE, cause, "store unavailable")
		if !errors.Is(err, cause) {
			t.Fatalf("errors.Is(%v, cause) = false", err)
		}
		if !strings.Contains(err.Error(), cause.Error()) {
			t.Fatalf("Error() = %q, want the cause for logs", err.Error())
		}
	})
}
