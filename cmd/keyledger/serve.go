package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
	"github.com/keyledger/keyledger/projections"
)

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	if err := domain.ValidatePrefix(f.keyPrefix); err != nil {
		return fmt.Errorf("--key-prefix: %w", err)
	}
	log, err := f.logger(stderr)
	if err != nil {
		return err
	}
	b, err := openBackend(ctx, f.common, f.natsListen, log)
	if err != nil {
		return err
	}
	defer b.close()

	listing, index, history := projections.NewListing(), projections.NewVerifyIndex(), projections.NewHistory()
	runner := projections.NewRunner(b.store, log, listing, index, history)
	runCtx, stopRunner := context.WithCancel(context.Background())
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = runner.Run(runCtx)
	}()
	defer func() { stopRunner(); <-runDone }()

	usage := projections.NewUsage()
	usageStore, err := events.OpenUsage(ctx, b.js, 1)
	if err != nil {
		return err
	}
	usageDone := make(chan struct{})
	go func() {
		defer close(usageDone)
		usage.Run(runCtx, usageStore, f.usageFlush, log)
	}()
	defer func() { stopRunner(); <-usageDone }()

	api := &khttp.Server{
		Keys:    &domain.Keys{Store: b.store, Prefix: f.keyPrefix, MaxExpiry: f.maxKeyLifetime},
		Listing: listing, Index: index, History: history, Usage: usage, Runner: runner,
		Healthy: func() error {
			if s := b.conn.Status(); s != nats.CONNECTED {
				return fmt.Errorf("NATS connection is %s", s)
			}
			return nil
		},
		Logger:           log,
		AuthFailureLimit: khttp.Limit{Per: f.authFailureLimit, Every: time.Minute},
		VerifyLimit:      khttp.Limit{Per: f.verifyRateLimit, Every: time.Second},
		CORSOrigins:      splitList(f.corsOrigins),
	}
	if f.oidcIssuer != "" {
		api.OIDC = khttp.NewOIDC(runCtx, khttp.OIDCConfig{
			Issuer: f.oidcIssuer, Audience: f.oidcAudience, JWKSURL: f.oidcJWKSURL, RolesClaim: f.oidcRolesClaim, Logger: log,
		})
	}
	srv := &http.Server{
		Handler:           api.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	ln, err := net.Listen("tcp", f.httpAddr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.httpAddr, err)
	}
	backendName := "embedded NATS in " + f.dataDir
	if f.natsURL != "" {
		backendName = "NATS at " + f.natsURL
	}
	log.Info("keyledger listening", "addr", "http://"+ln.Addr().String(), "events", backendName, "version", version)

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

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
