package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/events/natsembed"
)

// backend is an open event store and how to let go of it.
type backend struct {
	replicas int
	down     atomic.Int64 // unix nanoseconds since NATS is unreachable; 0: reachable
	js       jetstream.JetStream
	store    *events.Store
	start    *startup // how its opening steps were run: the later ones run the same way
	// consumers counts the consumers js asked for (a metric).
	consumers *events.ConsumerCount
	close     func()
}

// openBackend connects to --nats-url, or starts the embedded server on
// --data-dir, holding a lock there so that no second process opens the same
// store files.
func openBackend(ctx context.Context, c common, o openOpts, log *slog.Logger) (*backend, error) {
	if err := c.checkReplicas(); err != nil {
		return nil, err
	}
	o.replicas = c.replicas
	if c.natsURL != "" {
		opts, err := c.natsOptions()
		if err != nil {
			return nil, err
		}
		var nc *nats.Conn
		err = o.startup(log).step(ctx, "NATS", func(context.Context) (err error) {
			nc, err = events.Connect(c.natsURL, opts...)
			return err
		})
		if err != nil {
			return nil, err
		}
		return finishBackend(ctx, nc, o, log, func() { _ = events.DrainConn(nc, 10*time.Second) })
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	unlock, err := lockDir(c.dataDir)
	if err != nil {
		return nil, err
	}
	emb, err := natsembed.Start(natsembed.Config{Dir: c.dataDir, Fsync: c.fsync, Listen: o.natsListen, Logger: log})
	if err != nil {
		unlock()
		return nil, err
	}
	if url := emb.ClientURL(); url != "" {
		log.Info("embedded NATS client port open; credentials required",
			"url", url, "service_seed", emb.Credentials.Service, "subscriber_seed", emb.Credentials.Subscriber)
	}
	return finishBackend(ctx, emb.Conn, o, log, func() { emb.Close(); unlock() })
}

// checkReplicas refuses a replica count the stream cannot have.
func (c *common) checkReplicas() error {
	switch c.replicas {
	case 1, 3, 5:
	default:
		return fmt.Errorf("--stream-replicas must be 1, 3 or 5, not %d", c.replicas)
	}
	if c.replicas != 1 && c.natsURL == "" {
		return fmt.Errorf("--stream-replicas %d needs a NATS cluster (--nats-url); the embedded server is one node", c.replicas)
	}
	return nil
}

// openOpts say how a command uses the store.
type openOpts struct {
	replicas   int    // of the stream and buckets
	natsListen string // serve: open the embedded server's client port
	readOnly   bool   // audits: attach to the stream, never create or change it
	signer     *events.Signer
	signers    *events.Signers
	// start runs the steps that need NATS; nil: each is tried once.
	start *startup
}

func (o *openOpts) startup(log *slog.Logger) *startup {
	if o.start == nil {
		o.start = onceStartup(log)
	}
	return o.start
}

func finishBackend(ctx context.Context, nc *nats.Conn, o openOpts, log *slog.Logger, closeFn func()) (*backend, error) {
	consumers := &events.ConsumerCount{}
	js, err := jetstream.New(nc, consumers.Trace())
	if err != nil {
		closeFn()
		return nil, err
	}
	st := o.startup(log)
	nc.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			st.deny(err)
		}
		log.Warn("NATS", "err", err)
	})
	open := events.Open
	if o.readOnly {
		open = events.Attach
	}
	var store *events.Store
	err = st.step(ctx, "stream "+events.StreamName, func(ctx context.Context) (err error) {
		store, err = open(ctx, js, events.Config{Logger: log, Replicas: o.replicas, ReadOnly: o.readOnly, Signer: o.signer, Signers: o.signers})
		return err
	})
	if err != nil {
		closeFn()
		return nil, err
	}
	b := &backend{js: js, store: store, start: st, consumers: consumers, replicas: o.replicas, close: closeFn}
	nc.SetDisconnectErrHandler(func(*nats.Conn, error) { b.down.CompareAndSwap(0, time.Now().UnixNano()) })
	nc.SetReconnectHandler(func(*nats.Conn) { b.down.Store(0) })
	return b, nil
}

// unreachableSince is when the connection to NATS was lost; zero while up.
func (b *backend) unreachableSince() time.Time {
	if n := b.down.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// lockDir takes an exclusive advisory lock on dir/keyledger.lock.
func lockDir(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, "keyledger.lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by a running keyledger: stop it first, or point this command at its NATS with --nats-url", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); f.Close() }, nil
}
