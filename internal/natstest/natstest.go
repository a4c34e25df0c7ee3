// Package natstest starts a real embedded nats-server with JetStream for
// tests, in a temporary directory, and opens the keyledger event store on it.
package natstest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
)

// Env is a running embedded server with the store opened on it, signing
// with a key of its own (one deployment: every instance on it signs with
// Signer and trusts Signers).
type Env struct {
	Dir      string
	Embedded *natsembed.Server
	JS       jetstream.JetStream
	Store    *events.Store
	Signer   *events.Signer
	Signers  *events.Signers
}

// signers of the directories tests started servers in: a restart on the
// same directory keeps its deployment's key, as a data directory does.
var (
	signersMu sync.Mutex
	signerOf  = map[string]*events.Signer{}
)

// signerFor returns the signing key of dir, made on first use.
func signerFor(t testing.TB, dir string) *events.Signer {
	signersMu.Lock()
	defer signersMu.Unlock()
	if s := signerOf[dir]; s != nil {
		return s
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := events.NewSigner(priv)
	signerOf[dir] = s
	return s
}

// Start starts a server on a fresh directory; it stops when the test ends.
func Start(t testing.TB) *Env {
	t.Helper()
	return StartIn(t, t.TempDir())
}

// StartIn starts a server on dir, which may hold an earlier server's store:
// that is how tests restart. The server stops when the test ends, or
// earlier through Env.Stop.
func StartIn(t testing.TB, dir string) *Env {
	t.Helper()
	return start(t, dir, "")
}

// StartListening also opens a client port on loopback, with the generated
// credentials (Env.Embedded.Credentials), for tests of separate clients.
func StartListening(t testing.TB) *Env {
	t.Helper()
	return start(t, t.TempDir(), "127.0.0.1:0")
}

// StartListeningIn is StartListening on dir.
func StartListeningIn(t testing.TB, dir string) *Env {
	t.Helper()
	return start(t, dir, "127.0.0.1:0")
}

func start(t testing.TB, dir, listen string) *Env {
	t.Helper()
	emb, err := natsembed.Start(natsembed.Config{Dir: dir, Fsync: false, Listen: listen, Logger: Quiet()})
	if err != nil {
		t.Fatalf("start embedded nats-server: %v", err)
	}
	env := &Env{Dir: dir, Embedded: emb, Signer: signerFor(t, dir)}
	env.Signers = events.NewSigners(env.Signer.Public())
	t.Cleanup(env.Stop)
	env.JS, err = jetstream.New(emb.Conn)
	if err != nil {
		t.Fatalf("jetstream: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	env.Store, err = events.Open(ctx, env.JS, env.Config(Quiet()))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	return env
}

// Config is the store configuration of an instance of this deployment.
func (e *Env) Config(log *slog.Logger) events.Config {
	return events.Config{Logger: log, Signer: e.Signer, Signers: e.Signers}
}

// Stop shuts the server down; calling it again does nothing.
func (e *Env) Stop() {
	if e.Embedded != nil {
		e.Embedded.Close()
		e.Embedded = nil
	}
}

// LastSeq returns the stream's last sequence, failing the test on error.
func (e *Env) LastSeq(t testing.TB) uint64 {
	t.Helper()
	seq, err := e.Store.LastSeq(context.Background())
	if err != nil {
		t.Fatalf("last seq: %v", err)
	}
	return seq
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Recreate deletes the stream named in cfg and creates it again, empty,
// with cfg. A create straight after a delete can meet the old stream's
// files still being removed and fail with "error creating store for
// stream" (10049); that one error is tried again for up to 10 s.
func Recreate(t testing.TB, ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) {
	t.Helper()
	if err := js.DeleteStream(ctx, cfg.Name); err != nil {
		t.Fatalf("delete stream %s: %v", cfg.Name, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := js.CreateStream(ctx, cfg)
		var apiErr *jetstream.APIError
		if err == nil {
			return
		}
		if !errors.As(err, &apiErr) || apiErr.ErrorCode != jetstream.ErrorCode(10049) || time.Now().After(deadline) {
			t.Fatalf("create stream %s again: %v", cfg.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
