package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
)

// TestAttackRollingRestartDoesNotLoseTheStream restarts each server of a
// three-node cluster in turn (SIGKILL, then started again), as an upgrade
// does, while the stream's info is asked as often as a busy instance asks
// it (the projections, /metrics, waiting reads, scans): the store must not
// judge the stream deleted or replaced, a verdict it never takes back.
func TestAttackRollingRestartDoesNotLoseTheStream(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster test: not in -short")
	}
	nodes := cluster(t)
	nc, err := nats.Connect(urls(nodes), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var store *events.Store
	for deadline := time.Now().Add(30 * time.Second); ; {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		store, err = events.Open(ctx, js, events.Config{Replicas: 3, Logger: slog.New(slog.DiscardHandler)})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	raw := jetstreamRawNotFound(t, js)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var asks atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_, _ = store.LastSeq(ctx)
				cancel()
				asks.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	for _, n := range nodes {
		n.kill()
		time.Sleep(2 * time.Second)
		n.start(t, n.cmd.Path)
		time.Sleep(6 * time.Second)
	}
	for range 2 { // the whole cluster at once: a power cut
		for _, n := range nodes {
			n.kill()
		}
		time.Sleep(time.Second)
		for _, n := range nodes {
			n.start(t, n.cmd.Path)
		}
		time.Sleep(10 * time.Second)
	}
	close(stop)
	wg.Wait()
	raw.stop()
	t.Logf("%d asks; %d raw stream-not-found answers seen", asks.Load(), raw.n.Load())
	if why := store.StreamLost(); why != "" {
		t.Errorf("after a rolling restart of a healthy cluster the store says %q", why)
	}
}

type rawProbe struct {
	n    atomic.Int64
	done chan struct{}
	wg   sync.WaitGroup
}

func (p *rawProbe) stop() { close(p.done); p.wg.Wait() }

// jetstreamRawNotFound counts the stream info answers that say "not found"
// on its own connection, beside the store's.
func jetstreamRawNotFound(t *testing.T, js jetstream.JetStream) *rawProbe {
	p := &rawProbe{done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-p.done:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := js.Stream(ctx, events.StreamName)
			cancel()
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				p.n.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return p
}
