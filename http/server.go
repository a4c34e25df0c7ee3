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
	"github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/webhooks"
)

// Trust is the instance's signing key and trust set; events.Store is one.
type Trust interface {
	PublicKey() ed25519.PublicKey
	Signers() *events.Signers
}

// EventLog reads the history from the stream, on demand: it is not held in
// memory. events.Store is one.
type EventLog interface {
	// Load returns one key's events, oldest first.
	Load(ctx context.Context, org, id string) ([]domain.Event, error)
	// OrgEvents returns a page of an org's events (q), the last sequence
	// it examined, and whether more may follow.
	OrgEvents(ctx context.Context, org string, q domain.EventQuery) ([]domain.Event, uint64, bool, error)
	// EachKeyEvent calls fn with each event of some keys of an org, in
	// stream order, unless they hold more than most events (0: no bound):
	// then it reads none, and says so.
	EachKeyEvent(ctx context.Context, org string, ids []string, most uint64, fn func(domain.Event) error) (total uint64, ok bool, err error)
}

// DefaultScanBudget is how many events one read of the history examines
// at most: about 100 ms of reading and decoding from an embedded NATS on
// this project's 2-core machine (a no-match ?actor= scan measured 95–109
// ms), so that one request never costs more than that.
const DefaultScanBudget = 10000

// MaxBodyBytes is the largest request body accepted.
const MaxBodyBytes = 64 << 10

// Server holds what the handlers need. Handlers send commands to Keys and
// read the projections; they never write a projection.
type Server struct {
	Keys    *domain.Keys
	Listing *projections.Listing
	Index   *projections.VerifyIndex
	Log     EventLog
	Usage   *usage.Tracker
	// Outcomes counts verifications per key by outcome, with the recent
	// callers; a new one when nil. SkipOutcomes counts none (the bench's
	// baseline).
	Outcomes     *usage.Outcomes
	SkipOutcomes bool
	Runner       *projections.Runner
	// Snapshots, when set, gives /metrics the newest snapshot's age.
	Snapshots *projections.Snapshotter
	// Unreachable says since when the event store has been unreachable;
	// zero while it is reachable. Meanwhile /readyz answers 503 and answers
	// from memory say how stale they may be (X-Keyledger-Stale-Seconds).
	// nil: always reachable.
	Unreachable func() time.Time
	// ConsumersCreated, when set, gives /metrics how many JetStream
	// consumers this instance asked for (events.ConsumerCount).
	ConsumersCreated func() uint64
	// MaxStaleness, when not zero, makes verifications fail closed (503)
	// once the projections have not been current with the stream for
	// longer (Runner.CurrentAt: NATS cut off, or the feed stalled): past
	// it, a revocation made elsewhere may not have reached this instance.
	MaxStaleness time.Duration
	Now          func() time.Time
	Logger       *slog.Logger
	// Version is the build's version, shown by /healthz and a metric.
	Version string
	// WaitTimeout bounds how long a read waits for ?min_seq and a write for
	// its own event to be applied; 5s when zero.
	WaitTimeout time.Duration
	// CommandTimeout bounds a write's work with the event store: past it
	// the write answers 503 unavailable rather than hang; 5s when zero.
	CommandTimeout time.Duration
	// Trust says which key this instance signs with (served at
	// /v1/audit/pubkey) and which it trusts (/v1/audit/signers); nil:
	// neither is served.
	Trust Trust
	// Checkpoints gives the newest signed checkpoint, /v1/audit/head; nil:
	// not served.
	Checkpoints interface {
		Head(ctx context.Context) (events.Head, bool, error)
		Rejected() uint64 // messages on the checkpoint subject no trusted signer wrote
	}
	// OIDC signs people in with JWTs; nil: management keys only.
	OIDC *OIDC
	// SSO signs people in on the page with their identity provider, into
	// a session behind a cookie; nil: no sign-in on the page.
	SSO *SSO
	// GitHubKeys verifies the reports of GitHub's secret scanning
	// (POST /v1/secret-scanning/github); nil: the route is not served.
	GitHubKeys *GitHubKeys
	// LeakAction is what a reported leak of a live key does: LeakRevoke
	// (the default, "") or LeakNotify.
	LeakAction LeakAction
	// AuthFailureLimit bounds failed authentications per client address;
	// VerifyLimit bounds verifications per client address.
	AuthFailureLimit Limit
	VerifyLimit      Limit
	// WriteLimit bounds the creates and rotations of each credential (a
	// Limit per actor, not per address); revocations are not limited.
	WriteLimit Limit
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
	// Idempotency shares the answers to writes with an Idempotency-Key
	// between instances, sealed, for 24 hours; nil: each instance's
	// memory only.
	Idempotency IdempotencyStore
	// Webhooks manages and delivers the orgs' webhook endpoints
	// (/v1/orgs/{org}/webhooks); nil: not served.
	Webhooks *webhooks.Deliverer
	// ScanBudget bounds the events one read of the history examines
	// (DefaultScanBudget when zero): a filter that matches little answers
	// what it found so far and where to go on, never scans the whole
	// history in one request.
	ScanBudget int

	log           *slog.Logger
	metrics       *metrics
	mux           *chi.Mux
	idem          *idempotency
	authLimiter   *addrLimiter
	verifyLimiter *addrLimiter
	signInLimiter *addrLimiter
	largeBodies   chan struct{} // large bodies being read or served at once (MaxLargeBodies)
	writeBudgets  *writeBudgets
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
		s.Usage = usage.New()
	}
	if s.Outcomes == nil {
		s.Outcomes = usage.NewOutcomes()
	}
	s.MaxInFlight = cmp.Or(s.MaxInFlight, DefaultMaxInFlight)
	s.MaxStreams = cmp.Or(s.MaxStreams, DefaultMaxStreams)
	s.MaxWaiting = cmp.Or(s.MaxWaiting, DefaultMaxWaiting)
	s.MaxInFlightPerClient = cmp.Or(s.MaxInFlightPerClient, DefaultMaxInFlightPerClient)
	s.ReadBodyTimeout = cmp.Or(s.ReadBodyTimeout, DefaultReadBodyTimeout)
	s.inFlight, s.streams = make(chan struct{}, s.MaxInFlight), make(chan struct{}, s.MaxStreams)
	s.waiting, s.perClient = make(chan struct{}, s.MaxWaiting), newClientCounts(s.MaxInFlightPerClient)
	s.largeBodies = make(chan struct{}, MaxLargeBodies)
	if s.WaitTimeout == 0 {
		s.WaitTimeout = 5 * time.Second
	}
	if s.CommandTimeout == 0 {
		s.CommandTimeout = 5 * time.Second
	}
	if s.ScanBudget == 0 {
		s.ScanBudget = DefaultScanBudget
	}
	s.lastSeq = &lastSeqReader{read: func(ctx context.Context) (uint64, error) { return s.Runner.StreamLastSeq(ctx) }, timeout: s.CommandTimeout}
	s.metrics = s.newMetrics()
	s.idem = newIdempotency(time.Hour, 10000)
	s.authLimiter = newAddrLimiter(s.AuthFailureLimit, s.RateLimitClients, s.Now)
	s.verifyLimiter = newAddrLimiter(s.VerifyLimit, s.RateLimitClients, s.Now)
	s.writeBudgets = newWriteBudgets(s.WriteLimit, s.Now)
	if s.SSO != nil {
		s.signInLimiter = newAddrLimiter(cmp.Or(s.SSO.SignInLimit, Limit{Per: 30, Every: time.Minute}), s.RateLimitClients, s.Now)
	}

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
	r.With(s.current, s.verifyLimit).Post("/v1/verify", s.verify)
	r.With(s.current).Get("/v1/whoami", s.whoami)
	r.With(s.current).Get("/v1/events/stream", s.keyEventStream)
	r.Get("/v1/audit/pubkey", s.auditPubkey)
	r.Get("/v1/audit/signers", s.auditSigners)
	r.Get("/v1/audit/head", s.auditHead)
	r.Get("/v1/cli/config", s.cliConfig)
	if s.GitHubKeys != nil {
		r.With(s.current).Post(githubScanningPath, s.githubScanning)
	}
	// A report can append events: it spends the reporter's write budget.
	r.With(s.current, s.authenticated, s.writeLimited).Post("/v1/leaks", s.reportLeaks)
	if s.SSO != nil {
		r.Get("/auth/login", s.ssoLogin)
		r.Get("/auth/callback", s.ssoCallback)
		r.Post("/auth/logout", s.ssoLogout)
		r.Get("/v1/session", s.sessionInfo)
	}
	r.Route("/v1/orgs/{org}", func(r chi.Router) {
		r.Use(s.current, s.manager)
		r.Route("/keys", s.keyRoutes)
		r.Get("/usage", s.orgUsage)
		r.Get("/events", s.orgEvents)
		r.Get("/events/stream", s.orgEventStream)
		if s.Webhooks != nil {
			r.Route("/webhooks", s.webhookRoutes)
		}
	})
	return r
}

func (s *Server) keyRoutes(r chi.Router) {
	r.With(s.idempotent, s.writeLimited, s.bounded).Post("/", s.createKey)
	r.Get("/", s.listKeys)
	r.Route("/{id}", func(r chi.Router) {
		r.Use(s.keyID)
		r.Get("/", s.getKey)
		r.With(s.idempotent, s.writeLimited, s.bounded).Post("/rotate", s.rotateKey)
		r.With(s.idempotent, s.bounded).Delete("/", s.revokeKey)
		r.Get("/events", s.keyEvents)
		r.Get("/usage", s.keyUsage)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": s.Version})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	body := map[string]any{"status": "ready", "applied_seq": s.Runner.Applied()}
	if why := s.Runner.Broken(); why != "" {
		body["status"] = why
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
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

// auditPubkey publishes the key this instance signs its events and
// checkpoints with (PEM), for the other instances' and the services'
// trust sets.
func (s *Server) auditPubkey(w http.ResponseWriter, r *http.Request) {
	var pub ed25519.PublicKey
	if s.Trust != nil {
		pub = s.Trust.PublicKey()
	}
	if pub == nil {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "this instance signs nothing"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	w.Header().Set("X-Keyledger-Key-Id", events.KeyID(pub))
	_, _ = w.Write(events.PublicKeyPEM(pub))
}

// auditSigners publishes the trust set this instance judges events by
// (PEM): what a verifier's Options.Signers, or an auditor's
// --event-signers, should hold — once checked out of band.
func (s *Server) auditSigners(w http.ResponseWriter, r *http.Request) {
	if s.Trust == nil || s.Trust.Signers() == nil {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "this instance has no trust set"))
		return
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(s.Trust.Signers().PEM())
}

// auditHead answers the newest signed checkpoint: an auditor keeps it
// outside the system and later checks that the stream still holds it
// (keyledger audit verify --anchor).
func (s *Server) auditHead(w http.ResponseWriter, r *http.Request) {
	if s.Checkpoints == nil {
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "this instance writes no checkpoints"))
		return
	}
	head, ok, err := s.Checkpoints.Head(r.Context())
	switch {
	case err != nil:
		s.fail(w, r, domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached"))
	case !ok:
		s.fail(w, r, domain.Errorf(domain.ENOTFOUND, "the stream holds no signed checkpoint yet"))
	default:
		w.Header()["Cache-Control"] = noStore
		writeJSON(w, http.StatusOK, head)
	}
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
