package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/projections"
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
	b, err := openBackend(ctx, f.common, openOpts{natsListen: f.natsListen}, log)
	if err != nil {
		return err
	}
	defer b.close()
	bg := newBackground()
	defer bg.stop() // before b.close: the background work still needs NATS

	listing, index, runner, snapshots, err := startProjections(ctx, bg, b, f, log)
	if err != nil {
		return err
	}
	usage := projections.NewUsage()
	usageStore, err := events.OpenUsage(ctx, b.js, b.replicas)
	if err != nil {
		return err
	}
	bg.run(func(ctx context.Context) { usage.Run(ctx, usageStore, f.usageFlush, log) })

	pub, err := startCheckpoints(bg, b.store, f, log)
	if err != nil {
		return err
	}

	api := &khttp.Server{
		Keys:    &domain.Keys{Store: b.store, Prefix: f.keyPrefix, MaxExpiry: f.maxKeyLifetime},
		Listing: listing, Index: index, Log: b.store, Usage: usage, Runner: runner, Snapshots: snapshots,
		Unreachable:      b.unreachableSince,
		Logger:           log,
		Version:          buildVersion(),
		AuditKey:         pub,
		CommandTimeout:   f.commandTimeout,
		MaxInFlight:      f.maxInFlight,
		MaxStreams:       f.maxStreams,
		MaxWaiting:       f.maxWaiting,
		ReadBodyTimeout:  f.readBody,
		AuthFailureLimit: khttp.Limit{Per: f.authFailureLimit, Every: time.Minute},
		VerifyLimit:      khttp.Limit{Per: f.verifyRateLimit, Every: time.Second},
		RateLimitClients: f.rateLimitClients,
		CORSOrigins:      splitList(f.corsOrigins),
	}
	api.MaxInFlightPerClient = f.maxPerClient
	if f.maxPerClient == 0 {
		api.MaxInFlightPerClient = -1 // the flag's 0 is "no limit"; the Server's is its default
	}
	if f.oidcIssuer != "" {
		api.OIDC = khttp.NewOIDC(bg.ctx, khttp.OIDCConfig{
			Issuer: f.oidcIssuer, Audience: f.oidcAudience, JWKSURL: f.oidcJWKSURL, RolesClaim: f.oidcRolesClaim, Logger: log,
		})
	}
	return serveHTTP(ctx, f, api.Handler(), log)
}

// startProjections restores the listing and the verify index from the
// newest snapshot, if one fits, and follows the stream from there.
func startProjections(ctx context.Context, bg *background, b *backend, f *serveFlags, log *slog.Logger) (*projections.Listing, *projections.VerifyIndex, *projections.Runner, *projections.Snapshotter, error) {
	table := projections.NewTable() // the listing and the index hold each key once, together
	listing, index := table.Listing(), table.Index()
	snaps, err := events.OpenSnapshots(ctx, b.js, b.store, b.replicas)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	snapshotter := &projections.Snapshotter{Store: snaps, Table: table, Every: f.snapshotEvery, Logger: log}
	runner := projections.NewRunner(b.store, log, table, snapshotter)
	b.store.UseCache(listing)        // commands decide on the projections' state first
	b.store.OnAppended(runner.Offer) // and apply what they append at once
	runner.ResumeAfter(snapshotter.Restore(ctx))
	bg.run(func(ctx context.Context) { _ = runner.Run(ctx) })
	return listing, index, runner, snapshotter, nil
}

// startCheckpoints signs checkpoints in the background with --audit-key,
// and returns its public half; nil when no key is configured.
func startCheckpoints(bg *background, store *events.Store, f *serveFlags, log *slog.Logger) (ed25519.PublicKey, error) {
	if f.auditKey == "" {
		log.Warn("no --audit-key: this instance signs no checkpoints; give every instance on the stream the same key")
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(f.auditKey), 0o700); err != nil {
		return nil, err
	}
	signing, err := events.LoadOrCreateSigningKey(f.auditKey)
	if err != nil {
		return nil, fmt.Errorf("--audit-key: %w", err)
	}
	pub := signing.Public().(ed25519.PublicKey)
	log.Info("signing checkpoints", "key_id", events.KeyID(pub), "key_file", f.auditKey, "every", f.checkpointEvery)
	cp := &events.Checkpointer{Store: store, Key: signing, Logger: log}
	bg.run(func(ctx context.Context) { cp.Run(ctx, f.checkpointEvery) })
	return pub, nil
}

// serveHTTP serves until ctx ends, then lets in-flight requests finish.
func serveHTTP(ctx context.Context, f *serveFlags, h http.Handler, log *slog.Logger) error {
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
		return fmt.Errorf("listen on %s: %w", f.httpAddr, err)
	}
	backendName := "embedded NATS in " + f.dataDir
	if f.natsURL != "" {
		backendName = "NATS at " + f.natsURL
	}
	log.Info("keyledger listening", "addr", "http://"+ln.Addr().String(), "events", backendName, "version", buildVersion())

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
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
