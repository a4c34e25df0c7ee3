package http

import (
	"context"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"

	"github.com/oklog/ulid/v2"

	"github.com/keyledger/keyledger/domain"
)

// RequestIDHeader carries a request's id in and out.
const RequestIDHeader = "X-Request-Id"

type ctxRequestState struct{}

// requestState is what the outermost middleware keeps of a request for
// the code deeper in: its id, and the request slot it holds (bound), which
// a request gives back while it waits (awaitApplied). Only the request's
// own goroutine touches it.
type requestState struct {
	id   string
	pool chan struct{} // where the slot came from; nil: none taken
	held bool
}

func stateOf(ctx context.Context) *requestState {
	st, _ := ctx.Value(ctxRequestState{}).(*requestState)
	return st
}

// requestID returns the id of the request ctx belongs to; "" outside one.
func requestID(ctx context.Context) string {
	if st := stateOf(ctx); st != nil {
		return st.id
	}
	return ""
}

// withRequestID gives every request an id: the caller's X-Request-Id when
// it is a plain token of at most 128 characters, a new one otherwise. The
// answer carries it back, and every log line of the request holds it.
// An id that could hold a key is not taken: ids are logged, keys never.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(RequestIDHeader)
		if !plainToken(id) || mayHoldKey(id) {
			id = newRequestID()
		}
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ctxRequestState{}, &requestState{id: id})))
	})
}

// A new request id is this process's random prefix and a counter: unique
// across instances and restarts, and cheaper than a ULID on the hot path.
var (
	requestIDPrefix = ulid.Make().String()[16:] // ten random characters
	requestIDs      atomic.Uint64
)

func newRequestID() string {
	var b [32]byte
	n := copy(b[:], requestIDPrefix)
	b[n] = '-'
	return string(strconv.AppendUint(b[:n+1], requestIDs.Add(1), 36))
}

// mayHoldKey reports whether s has an "_" followed by as many base62
// characters as a key has after its prefix: the shape of a key anywhere in
// it, checksum or not.
func mayHoldKey(s string) bool {
	run := -1 // base62 characters since the last "_"; -1 before any
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_':
			run = 0
		case run >= 0 && ('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'):
			run++
			if run == domain.KeyBodyLen {
				return true
			}
		default:
			run = -1
		}
	}
	return false
}

// maskKeys returns s with every run of KeyBodyLen or more base62
// characters, the part of a key after its "_" (the prefix is public),
// replaced as a key's masked form is: "****" and the run's last 4
// characters. s itself when it holds no such run, which is the usual case.
// Paths and queries are logged through it.
func maskKeys(s string) string {
	var b []byte
	done, start := 0, -1 // copied up to done; the current run began at start
	for i := 0; i <= len(s); i++ {
		if i < len(s) && base62(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 && i-start >= domain.KeyBodyLen {
			b = append(b, s[done:start]...)
			b = append(b, "****"...)
			b = append(b, s[i-4:i]...)
			done = i
		}
		start = -1
	}
	if b == nil {
		return s
	}
	return string(append(b, s[done:]...))
}

func base62(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

// loggedQuery is the query string as the access line shows it: decoded,
// so that an escaped "_" or letter hides nothing from maskKeys, and masked.
func loggedQuery(raw string) string {
	if v, err := url.ParseQuery(raw); err == nil {
		// A sign-in's code and state are of no use without the browser
		// that holds the sign-in's cookie; they stay out of the log anyway.
		masked := false
		for _, name := range []string{"code", "state", "session_state"} {
			if v.Has(name) {
				v.Set(name, "****")
				masked = true
			}
		}
		if masked {
			raw = v.Encode()
		}
	}
	if q, err := url.QueryUnescape(raw); err == nil {
		raw = q
	}
	return maskKeys(raw)
}

// plainToken: 1 to 128 characters among letters, digits and "-_.:/+=".
func plainToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':' || c == '/' || c == '+' || c == '=') {
			return false
		}
	}
	return true
}

// LogHandler adds the request id to every record logged with a request's
// context, wherever in the code it is logged from.
// Wrapping twice adds it once.
func LogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(requestIDHandler); ok {
		return h
	}
	return requestIDHandler{h}
}

type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, rec slog.Record) error {
	if id := requestID(ctx); id != "" {
		rec.AddAttrs(slog.String("request_id", id))
	}
	return h.Handler.Handle(ctx, rec)
}

func (h requestIDHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(attrs)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
