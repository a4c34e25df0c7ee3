// Command protected-service is a tiny HTTP service that only keyledger keys
// may call. It checks them in-process with the verifier package, fed from
// the KEYLEDGER stream over a read-only NATS credential: no call to
// keyledger per request, and a revoked key is refused as soon as the stream
// has the revocation.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/verifier"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], log, nil); err != nil {
		log.Error("protected-service", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx ends; ready, when not nil, gets the listen address.
func run(ctx context.Context, args []string, log *slog.Logger, ready chan<- string) error {
	fs := flag.NewFlagSet("protected-service", flag.ContinueOnError)
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "keyledger's NATS")
	creds := fs.String("nats-creds", "data/nats-subscriber.nk", "the read-only credential: an NKey seed or a .creds file (keyledger serve --nats-listen, or keyledger nats-credentials, writes it)")
	inbox := fs.String("nats-inbox-prefix", verifier.SubscriberInbox, "where NATS replies come: the subscriber credential may read only its own inbox")
	signersFile := fs.String("event-signers", "keyledger-signers.pem", "the public keys of the keyledger instances whose events count (keyledger audit pubkey > keyledger-signers.pem)")
	addr := fs.String("addr", "127.0.0.1:8081", "HTTP listen address")
	scope := fs.String("scope", "orders:read", "scope a key needs for /orders")
	if err := fs.Parse(args); err != nil {
		return err
	}
	raw, err := os.ReadFile(*signersFile)
	if err != nil {
		return fmt.Errorf("--event-signers: %w", err)
	}
	signers, err := verifier.ParseSigners(raw)
	if err != nil {
		return fmt.Errorf("--event-signers: %w", err)
	}
	nk, err := verifier.Credentials(*creds)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(*natsURL, nk, nats.Name("protected-service"), nats.MaxReconnects(-1), nats.CustomInboxPrefix(*inbox))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	v, err := verifier.New(ctx, js, verifier.Options{
		Signers: signers,
		Logger:  log,
		OnRevoked: func(e verifier.Event) {
			log.Info("key revoked: refused from now on", "key_id", e.KeyID, "org", e.OrgID)
		},
		OnRotated: func(e verifier.Event) { log.Info("key rotated", "key_id", e.KeyID, "org", e.OrgID) },
	})
	if err != nil {
		return err
	}
	defer v.Close()

	mux := http.NewServeMux()
	mux.Handle("GET /orders", v.Middleware(verifier.RequireScope(*scope)(http.HandlerFunc(orders))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !v.Ready() {
			http.Error(w, "catching up with keyledger", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("protected-service listening", "addr", "http://"+ln.Addr().String())
	if ready != nil {
		ready <- ln.Addr().String()
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// orders answers with who called: the verifier put it in the context.
func orders(w http.ResponseWriter, r *http.Request) {
	id, _ := verifier.FromContext(r.Context())
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"org": id.OrgID, "key": id.KeyID, "key_name": id.Name, "orders": []string{}})
}
