// Package http serves keyledger's HTTP API: the chi router, the handlers,
// and the one map from error codes to statuses.
package http

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/projections"
)

// EventLog reads the history from the stream, on demand: it is not held in
// memory. events.Store is one.
type EventLog interface {
	// Load returns one key's events, oldest first.
	Load(ctx context.Context, org, id string) ([]domain.Event, error)
	// OrgEvents returns a page of an org's events after a sequence.
	OrgEvents(ctx context.Context, org string, after uint64, limit int, f domain.EventFilter) ([]domain.Event, uint64, bool, error)
	// EachOrgEvent calls fn with each event of an org from a sequence on.
	EachOrgEvent(ctx context.Context, org string, from uint64, fn func(domain.Event) error) error
}

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 64 << 10

// Server holds what the handlers need. Handlers send commands to Keys and
// read the projections; they never write a projection.
type Server struct {
	Keys    *domain.Keys
	Listing *projections.Listing
	Index   *projections.VerifyIndex
	Log     EventLog
	Usage   *projections.Usage
	Runner  *projections.Runner
	// Snapshots, when set, gives /metrics the newest snapshot's age.
	Snapshots *projections.Snapshotter
	// Unreachable says since when the event store has been unreachable;
	// zero while it is reachable. Meanwhile /readyz answers 503 and answers
	// from memory say how stale they may be (X-Keyledger-Stale-Seconds).
	// nil: always reachable.
	Unreachable func() time.Time
	Now         func() time.Time
	Logger      *slog.Logger
	// Version is the build's version, shown by /healthz and a metric.
	Version string
	// WaitTimeout bounds how long a read waits for ?min_seq and a write for
	// its own event to be applied; 5s when zero.
	WaitTimeout time.Duration
	// CommandTimeout bounds a write's work with the event store: past it
	// the write answers 503 unavailable rather than hang; 5s when zero.
	CommandTimeout time.Duration
	// AuditKey is the public half of the checkpoint signing key, served at
	// /v1/audit/pubkey; nil: none configured.
	AuditKey ed25519.PublicKey
	// OIDC signs people in with JWTs; nil: management keys only.
	OIDC *OIDC
	// AuthFailureLimit bounds failed authentications per client address;
	// VerifyLimit bounds verifications per client address.
	AuthFailureLimit Limit
	VerifyLimit      Limit
	// RateLimitClients bounds how many clients (IPv4 addresses, IPv6
	// /64s) each limit tracks, DefaultRateLimitClients when zero; past it,
	// the clients it does not track share one budget (see addrLimiter).
	RateLimitClients int
	// CORSOrigins may call the API from a browser; none by default.
	CORSOrigins []string
	// MaxInFlight bounds the requests served at once (1024 when zero) and
	// MaxStreams the open event streams (256): past them, 503 at once
	// rather than a pile-up. MaxWaiting (1024) bounds the requests waiting
	// for a sequence (?min_seq, a write for its own event), which hold no
	// slot meanwhile; past it, 503 at once.
	MaxInFlight int
	MaxStreams  int
	MaxWaiting  int
	// MaxInFlightPerClient bounds the requests and streams one client (an
	// IPv4 address, an IPv6 /64) has under way, so that one cannot take
	// every slot: past it, 429 at once. 64 when zero; negative: no bound.
	MaxInFlightPerClient int
	// ReadBodyTimeout bounds how long a client may take to send a request
	// body (10s when zero), which is read before the request takes a slot.
	ReadBodyTimeout time.Duration
	// Heartbeat is how often an idle event stream gets a comment (15s);
	// SlowClientTimeout cuts a stream whose client does not take a write
	// within it (10s).
	Heartbeat         time.Duration
	SlowClientTimeout time.Duration

	log           *slog.Logger
	metrics       *metrics
	mux           *chi.Mux
	idem          *idempotency
	authLimiter   *addrLimiter
	verifyLimiter *addrLimiter
	inFlight      chan struct{}
	streams       chan struct{}
	waiting       chan struct{}
	perClient     *clientCounts
	lastSeq       *lastSeqReader
}

// Handler returns the router with every route.
func (s *Server) Handler() http.Handler {
	if s.Logger == nil {
		s.Logger = slog.Default()
	}
	s.log = slog.New(LogHandler(s.Logger.Handler()))
	if s.Now == nil {
		s.Now = time.Now
	}
	if s.Heartbeat == 0 {
		s.Heartbeat = 15 * time.Second
	}
	if s.SlowClientTimeout == 0 {
		s.SlowClientTimeout = 10 * time.Second
	}
	if s.Usage == nil {
		s.Usage = projections.NewUsage()
	}
	s.MaxInFlight = cmp.Or(s.MaxInFlight, DefaultMaxInFlight)
	s.MaxStreams = cmp.Or(s.MaxStreams, DefaultMaxStreams)
	s.MaxWaiting = cmp.Or(s.MaxWaiting, DefaultMaxWaiting)
	s.MaxInFlightPerClient = cmp.Or(s.MaxInFlightPerClient, DefaultMaxInFlightPerClient)
	s.ReadBodyTimeout = cmp.Or(s.ReadBodyTimeout, DefaultReadBodyTimeout)
	s.inFlight, s.streams = make(chan struct{}, s.MaxInFlight), make(chan struct{}, s.MaxStreams)
	s.waiting, s.perClient = make(chan struct{}, s.MaxWaiting), newClientCounts(s.MaxInFlightPerClient)
	if s.WaitTimeout == 0 {
		s.WaitTimeout = 5 * time.Second
	}
	if s.CommandTimeout == 0 {
		s.CommandTimeout = 5 * time.Second
	}
	s.lastSeq = &lastSeqReader{read: func(ctx context.Context) (uint64, error) { return s.Runner.StreamLastSeq(ctx) }, timeout: s.CommandTimeout}
	s.metrics = s.newMetrics()
	s.idem = newIdempotency(time.Hour, 10000)
	s.authLimiter = newAddrLimiter(s.AuthFailureLimit, s.RateLimitClients, s.Now)
	s.verifyLimiter = newAddrLimiter(s.VerifyLimit, s.RateLimitClients, s.Now)

	r := chi.NewRouter()
	s.mux = r
	r.Use(withRequestID, s.instrument, s.recoverer, s.bound, s.staleness, securityHeaders, cors(s.CORSOrigins))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "no such route"))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{errorDetail{Code: "method_not_allowed", Message: "method not allowed on this route"}})
	})

	s.pageRoutes(r)
	r.Get("/healthz", s.healthz)
	r.Get("/openapi.json", s.openAPIDocument)
	r.Get("/readyz", s.readyz)
	r.Method(http.MethodGet, "/metrics", s.metrics.handler())
	r.With(s.verifyLimit).Post("/v1/verify", s.verify)
	r.Get("/v1/whoami", s.whoami)
	r.Get("/v1/events/stream", s.keyEventStream)
	r.Get("/v1/audit/pubkey", s.auditPubkey)
	r.Route("/v1/orgs/{org}", func(r chi.Router) {
		r.Use(s.manager)
		r.Route("/keys", s.keyRoutes)
		r.Get("/events", s.orgEvents)
		r.Get("/events/stream", s.orgEventStream)
	})
	return r
}

func (s *Server) keyRoutes(r chi.Router) {
	r.With(s.idempotent, s.bounded).Post("/", s.createKey)
	r.Get("/", s.listKeys)
	r.Route("/{id}", func(r chi.Router) {
		r.Use(s.keyID)
		r.Get("/", s.getKey)
		r.With(s.idempotent, s.bounded).Post("/rotate", s.rotateKey)
		r.With(s.idempotent, s.bounded).Delete("/", s.revokeKey)
		r.Get("/events", s.keyEvents)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"status": "ready", "applied_seq": s.Runner.Applied()}
	if !s.Runner.Ready() {
		body["status"] = "catching up"
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	if s.Unreachable != nil && !s.Unreachable().IsZero() {
		body["status"] = "event store unreachable"
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

// auditPubkey publishes the key that signs checkpoints (PEM), so that
// anyone can check them with keyledger audit verify --pubkey.
func (s *Server) auditPubkey(w http.ResponseWriter, r *http.Request) {
	if s.AuditKey == nil {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "this instance signs no checkpoints"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("X-Keyledger-Key-Id", events.KeyID(s.AuditKey))
	_, _ = w.Write(events.PublicKeyPEM(s.AuditKey))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header()["Content-Type"] = jsonType
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON body into v: JSON only, at most MaxBodyBytes, no
// unknown field, one value. When optional, an empty body leaves v as it is.
func decode(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	if r.ContentLength > MaxBodyBytes {
		return domain.Errorf(domain.ETOOLARGE, "request body is over %d bytes", MaxBodyBytes)
	}
	if optional && r.ContentLength == 0 {
		return nil
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return domain.Errorf(domain.EUNSUPPORTED, "send the body as application/json")
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if optional && errors.Is(err, io.EOF) {
			return nil
		}
		return bodyError(err)
	}
	if dec.More() {
		return domain.Errorf(domain.EINVALID, "body must hold one JSON value")
	}
	return nil
}

func bodyError(err error) error {
	var maxErr *http.MaxBytesError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &maxErr):
		return domain.Errorf(domain.ETOOLARGE, "request body is over %d bytes", MaxBodyBytes)
	case errors.As(err, &syntax):
		return domain.Errorf(domain.EINVALID, "body is not valid JSON (at byte %d)", syntax.Offset)
	case errors.As(err, &typ):
		return domain.Errorf(domain.EINVALID, "field %q must be %s", typ.Field, typ.Type)
	case errors.Is(err, io.EOF):
		return domain.Errorf(domain.EINVALID, "body is empty")
	}
	// encoding/json reports unknown fields and truncation only as text;
	// its messages hold no more than the field name.
	return domain.Errorf(domain.EINVALID, "body: %s", err.Error())
}

// queryUint reads an optional unsigned query parameter within [lo, hi].
func queryUint(r *http.Request, name string, def, lo, hi uint64) (uint64, error) {
	if r.URL.RawQuery == "" {
		return def, nil // most requests: no query to parse
	}
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n < lo || n > hi {
		return 0, domain.Errorf(domain.EINVALID, "%s must be a whole number from %d to %d", name, lo, hi)
	}
	return n, nil
}
