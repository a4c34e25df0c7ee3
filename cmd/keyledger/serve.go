package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/projections"
	kusage "github.com/keyledger/keyledger/usage"
	"github.com/keyledger/keyledger/webhooks"
)

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseServe(args, stdout, stderr)
	if err != nil || f.printConfig {
		return err
	}
	if err := domain.ValidatePrefix(f.keyPrefix); err != nil {
		return fmt.Errorf("--key-prefix: %w", err)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	if err := f.checkReplicas(); err != nil {
		return err
	}
	signer, err := f.signing.signer(&f.common)
	if err != nil {
		return err
	}
	set, err := f.signing.signers(&f.common, signer)
	if err != nil {
		return err
	}
	// HTTP listens before NATS is there: /healthz says the process is
	// alive and /readyz what the start-up waits for.
	page := &khttp.Starting{Version: buildVersion()}
	web, err := listenHTTP(f, page, log)
	if err != nil {
		return err
	}
	defer web.Close() // when the start-up fails; serveHTTP shuts it down properly
	startCtx := ctx
	if f.startTimeout > 0 {
		var cancel context.CancelFunc
		startCtx, cancel = context.WithTimeoutCause(startCtx, f.startTimeout, fmt.Errorf("not started within --start-timeout %s", f.startTimeout))
		defer cancel()
	}
	st := waitingStartup(log, page)
	b, api, bg, err := start(startCtx, f, st, signer, set, log)
	if b != nil {
		defer b.close()
	}
	if bg != nil {
		// Deferred after b.close, so run before it: the background work's
		// final flushes and rollups still need NATS.
		defer bg.stop()
	}
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while starting", "err", err)
			return nil
		}
		return err
	}
	page.Serve(api.Handler())
	return serveHTTP(ctx, f, web, log)
}

// start opens the store and everything the API needs, each step waited
// for (st), and returns the API. The backend and the background loops
// come back even with an error, to be stopped.
func start(ctx context.Context, f *serveFlags, st *startup, signer *events.Signer, set *events.Signers, log *slog.Logger) (*backend, *khttp.Server, *background, error) {
	b, err := openBackend(ctx, f.common, openOpts{natsListen: f.natsListen, signer: signer, signers: set, start: st}, log)
	if err != nil {
		return nil, nil, nil, err
	}
	logTrust(log, signer, set)
	bg := newBackground()

	listing, index, runner, snapshots, reg, err := startProjections(ctx, bg, b, f, log)
	if err != nil {
		return b, nil, bg, err
	}
	deliverer, err := startWebhooks(ctx, bg, b, f, reg, runner, log)
	if err != nil {
		return b, nil, bg, err
	}
	uses := kusage.New()
	var usageStore *events.UsageStore
	if err := st.step(ctx, "stream "+events.UsageStream+" and object store "+events.UsageRollupBucket, func(ctx context.Context) (err error) {
		usageStore, err = events.OpenUsage(ctx, b.js, b.replicas, log)
		return err
	}); err != nil {
		return b, nil, bg, err
	}
	bg.run(func(ctx context.Context) { uses.Run(ctx, usageStore, f.usageFlush, log) })
	outcomes := kusage.NewOutcomes()
	var outcomeStore *events.OutcomeStore
	if err := st.step(ctx, "stream "+events.OutcomeStream+" and object store "+events.OutcomeRollupBucket, func(ctx context.Context) (err error) {
		outcomeStore, err = events.OpenOutcomes(ctx, b.js, b.replicas, f.outcomeMaxBytes, log)
		return err
	}); err != nil {
		return b, nil, bg, err
	}
	bg.run(func(ctx context.Context) { outcomes.Run(ctx, outcomeStore, f.outcomeFlush, log) })
	outcomes.Claims = outcomeStore // a verifier's report resent to another instance counts once
	bg.run(func(ctx context.Context) {
		known := func(org, id string) bool { _, ok := listing.Get(org, id); return ok }
		if err := outcomes.ServeReports(ctx, b.js.Conn(), known, log); err != nil {
			log.Warn("verifiers' usage reports are not counted", "err", err)
		}
	})

	var idem *events.Idempotency
	if err := st.step(ctx, "key-value bucket "+events.IdempotencyBucket, func(ctx context.Context) (err error) {
		idem, err = events.OpenIdempotency(ctx, b.js, b.replicas)
		return err
	}); err != nil {
		return b, nil, bg, err
	}

	checkpoints := &events.Checkpointer{Store: b.store, Logger: log}
	bg.run(func(ctx context.Context) {
		// Its verdicts come from the projections: wait until they hold the stream.
		if runner.WaitReady(ctx) == nil {
			log.Info("signing checkpoints", "key_id", b.store.Signer().KeyID(), "every", f.checkpointEvery)
			checkpoints.Run(ctx, f.checkpointEvery)
		}
	})
	bg.run(func(ctx context.Context) { reloadOnHangup(ctx, f, b.store, log) })

	api := &khttp.Server{
		Keys: &domain.Keys{Store: b.store, Prefix: f.keyPrefix, MaxExpiry: f.maxKeyLifetime,
			MaxPerOrg: f.maxKeysPerOrg, Counter: listing},
		Listing: listing, Index: index, Log: b.store, Usage: uses, Outcomes: outcomes, Runner: runner, Snapshots: snapshots,
		Idempotency:      idem,
		Unreachable:      b.unreachableSince,
		ConsumersCreated: b.consumers.Created,
		Logger:           log,
		Version:          buildVersion(),
		Trust:            b.store,
		Checkpoints:      checkpoints,
		Webhooks:         deliverer,
		CommandTimeout:   f.commandTimeout,
		MaxInFlight:      f.maxInFlight,
		MaxStreams:       f.maxStreams,
		MaxStaleness:     f.maxStaleness,
		MaxWaiting:       f.maxWaiting,
		ReadBodyTimeout:  f.readBody,
		AuthFailureLimit: khttp.Limit{Per: f.authFailureLimit, Every: time.Minute},
		VerifyLimit:      khttp.Limit{Per: f.verifyRateLimit, Every: time.Second},
		WriteLimit:       khttp.Limit{Per: f.writeRateLimit, Every: time.Minute},
		RateLimitClients: f.rateLimitClients,
		CORSOrigins:      splitList(f.corsOrigins),
	}
	api.MaxInFlightPerClient = f.maxPerClient
	if f.maxPerClient == 0 {
		api.MaxInFlightPerClient = -1 // the flag's 0 is "no limit"; the Server's is its default
	}
	if f.oidcIssuer != "" {
		api.OIDC = khttp.NewOIDC(bg.ctx, khttp.OIDCConfig{
			Issuer: f.oidcIssuer, Audience: f.oidcAudience, JWKSURL: f.oidcJWKSURL, RolesClaim: f.oidcRolesClaim, GroupsClaim: f.oidcGroupsClaim, ManagerGroup: f.managerGroup, CLIClientID: f.oidcCLIClientID, Logger: log,
		})
	}
	api.LeakAction = khttp.LeakAction(f.leakAction)
	if f.githubKeysURL != "" || f.githubKeysFile != "" {
		api.GitHubKeys = &khttp.GitHubKeys{URL: f.githubKeysURL, File: f.githubKeysFile}
	}
	if f.oidcClientID != "" {
		var sessions, signIns *events.Sessions
		if err := st.step(ctx, "key-value buckets "+events.SessionsBucket+" and "+events.SignInsBucket, func(ctx context.Context) (err error) {
			if sessions, err = events.OpenSessions(ctx, b.js, b.replicas); err != nil {
				return err
			}
			signIns, err = events.OpenSignIns(ctx, b.js, b.replicas)
			return err
		}); err != nil {
			return b, nil, bg, err
		}
		api.SSO = &khttp.SSO{OIDC: api.OIDC, ClientID: f.oidcClientID, ClientSecret: f.oidcClientSecret, PublicURL: f.public, Store: sessions, SignIns: signIns, Scopes: splitList(f.oidcScopes)}
		log.Info("managers sign in on the page with the identity provider; register this redirect URL for the client there", "redirect_url", api.SSO.RedirectURL(), "client_id", f.oidcClientID, "confidential", f.oidcClientSecret != "")
	}
	return b, api, bg, nil
}

// startProjections restores the listing and the verify index from the
// newest snapshot, if one fits, and follows the stream from there.
func startProjections(ctx context.Context, bg *background, b *backend, f *serveFlags, log *slog.Logger) (*projections.Listing, *projections.VerifyIndex, *projections.Runner, *projections.Snapshotter, *webhooks.Registry, error) {
	table := projections.NewTable() // the listing and the index hold each key once, together
	listing, index := table.Listing(), table.Index()
	var snaps *events.Snapshots
	if err := b.start.step(ctx, "object store "+events.SnapshotBucket, func(ctx context.Context) (err error) {
		snaps, err = events.OpenSnapshots(ctx, b.js, b.store, b.replicas)
		return err
	}); err != nil {
		return nil, nil, nil, nil, nil, err
	}
	// Snapshots do not hold webhook endpoints: the registry reads theirs
	// from the stream first (a few per org), then follows with the rest.
	reg := webhooks.NewRegistry()
	if err := b.start.step(ctx, "webhook endpoints in the stream", func(ctx context.Context) error {
		return reg.Prime(ctx, b.store.EachWebhookEvent)
	}); err != nil {
		return nil, nil, nil, nil, nil, fmt.Errorf("webhook endpoints: %w", err)
	}
	snapshotter := &projections.Snapshotter{Store: snaps, Table: table, Every: f.snapshotEvery, Logger: log}
	runner := projections.NewRunner(b.store, log, table, snapshotter, reg)
	b.store.UseCache(listing)  // commands decide on the projections' state first
	b.store.UseVerdicts(table) // reads leave out what the projections refused
	b.store.WaitVerdicts(runner.WaitFor)
	b.store.OnAppended(runner.Offer) // and apply what they append at once
	from, err := snapshotter.Restore(ctx)
	if err != nil {
		return nil, nil, nil, nil, nil, fmt.Errorf("%w; refusing to serve. If the stream was restored on purpose, delete the snapshot bucket %s and start again", err, events.SnapshotBucket)
	}
	runner.ResumeAfter(from)
	bg.run(func(ctx context.Context) { _ = runner.Run(ctx) })
	return listing, index, runner, snapshotter, reg, nil
}

// startWebhooks opens the sealed secrets and starts delivering, once the
// projections hold the stream (deliveries are judged by their verdicts).
func startWebhooks(ctx context.Context, bg *background, b *backend, f *serveFlags, reg *webhooks.Registry, runner *projections.Runner, log *slog.Logger) (*webhooks.Deliverer, error) {
	path := f.webhookKey
	if path == "" {
		if f.natsURL != "" {
			// Every instance must seal with the same key; one made up here
			// would open none of the others' secrets.
			log.Info("webhooks are off: with --nats-url, give every instance the same --webhook-secrets-key FILE (created if missing) to deliver them")
			return nil, nil
		}
		path = filepath.Join(f.dataDir, "webhook-secrets.key")
	}
	key, err := webhooks.LoadKey(path, true)
	if err != nil {
		return nil, fmt.Errorf("--webhook-secrets-key: %w", err)
	}
	var vault *webhooks.Vault
	if err := b.start.step(ctx, "key-value bucket "+webhooks.SecretsBucket, func(ctx context.Context) (err error) {
		vault, err = webhooks.OpenVault(ctx, b.js, key, b.replicas)
		return err
	}); err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	var d *webhooks.Deliverer
	if err := b.start.step(ctx, "stream "+webhooks.AttemptsStream+" and key-value bucket "+webhooks.StateBucket, func(ctx context.Context) (err error) {
		d, err = webhooks.New(ctx, webhooks.Options{
			JS: b.js, Store: b.store, Vault: vault, Registry: reg, Replicas: b.replicas,
			AllowHTTP: f.webhooksHTTP, AllowPrivate: f.webhooksPrivate,
			Instance: fmt.Sprintf("%s/%d", host, os.Getpid()), Log: log,
		})
		return err
	}); err != nil {
		return nil, err
	}
	bg.run(func(ctx context.Context) {
		if runner.WaitReady(ctx) == nil {
			d.Run(ctx)
		}
	})
	return d, nil
}

// reloadOnHangup reads the signing key and the trust set again on SIGHUP,
// so that a key is added, switched to or retired without a restart.
func reloadOnHangup(ctx context.Context, f *serveFlags, store *events.Store, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		signer, err := f.signing.signer(&f.common)
		var set *events.Signers
		if err == nil {
			set, err = f.signing.signers(&f.common, signer)
		}
		if err == nil {
			// Both at once: a new key and the retirement of the one it
			// replaces are one step.
			err = store.SetTrust(signer, set)
		}
		if err != nil {
			log.Error("SIGHUP: the signing key or the trust set cannot be read; keeping the ones in use", "err", err)
			continue
		}
		logTrust(log, signer, store.Signers())
	}
}

// webServer is the HTTP server, serving; served has why it stopped.
type webServer struct {
	*http.Server
	served chan error
}

// listenHTTP opens the HTTP port and serves h on it.
func listenHTTP(f *serveFlags, h http.Handler, log *slog.Logger) (*webServer, error) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: f.readHeader,
		// No ReadTimeout: headers have ReadHeaderTimeout and bodies the
		// API's own --read-body-timeout, each on its own, so that one
		// cannot eat into the other.
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
	}
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", f.httpAddr, err)
	}
	srv.Addr = ln.Addr().String()
	log.Info("starting: HTTP open, /readyz answers 503 until keyledger serves", "addr", "http://"+srv.Addr)
	web := &webServer{Server: srv, served: make(chan error, 1)}
	go func() { web.served <- srv.Serve(ln) }()
	return web, nil
}

// serveHTTP serves until ctx ends, then lets in-flight requests finish.
func serveHTTP(ctx context.Context, f *serveFlags, srv *webServer, log *slog.Logger) error {
	backendName := "embedded NATS in " + f.dataDir
	if f.natsURL != "" {
		backendName = "NATS at " + f.natsURL
	}
	log.Info("keyledger listening", "addr", "http://"+srv.Addr, "events", backendName, "version", buildVersion())
	select {
	case err := <-srv.served:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing in-flight requests", "timeout", f.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Warn("shutdown did not finish in time", "err", err)
	}
	log.Info("stopped")
	return nil
}

// background runs the service's loops until stop, which waits for them.
type background struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newBackground() *background {
	ctx, cancel := context.WithCancel(context.Background())
	return &background{ctx: ctx, cancel: cancel}
}

func (b *background) run(fn func(context.Context)) { b.wg.Go(func() { fn(b.ctx) }) }

func (b *background) stop() {
	b.cancel()
	b.wg.Wait()
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
