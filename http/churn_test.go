package http_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/events"
	khttp "github.com/keyledger/keyledger/http"
)

// TestCommandsAndStreamsCreateNoConsumers runs 1,000 commands over HTTP
// (creations, rotations, revocations), history pages, listings as of an
// instant and checkpoints while 200 event streams are open, and counts
// the consumers the embedded nats-server says it created (its advisory
// for each, whoever asked). Reads of the history use direct gets and the
// streams follow the projections' feed: none may create one per read.
func TestCommandsAndStreamsCreateNoConsumers(t *testing.T) {
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		s.MaxStreams, s.MaxInFlightPerClient = 300, -1 // every stream comes from one address
		s.Heartbeat = 100 * time.Millisecond           // and each heartbeat reads again
	})
	admin := h.bootstrap("acme")
	other := h.bootstrap("globex")

	var created atomic.Int64
	sub, err := h.env.Embedded.Conn.Subscribe("$JS.EVENT.ADVISORY.CONSUMER.CREATED."+events.StreamName+".>", func(*nats.Msg) { created.Add(1) })
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := h.env.Embedded.Conn.Flush(); err != nil {
		t.Fatal(err)
	}

	const streams = 200
	open := make([]*sseStream, streams)
	for i := range open {
		path := "/v1/orgs/acme/events/stream"
		switch i % 4 {
		case 1:
			path += "?after_seq=0" // from the start of the history
		case 2:
			path += "?types=KeyRevoked"
		case 3:
			path = "/v1/orgs/globex/events/stream"
		}
		token := admin
		if i%4 == 3 {
			token = other
		}
		open[i] = h.openStream(path, token)
	}

	// 1,000 commands: 400 keys created, 300 of them rotated and revoked,
	// across two orgs, from four clients at once.
	const clients, keysEach = 4, 100
	ids := make([][]string, clients)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			org, token := "acme", admin
			if c%2 == 1 {
				org, token = "globex", other
			}
			for i := range keysEach {
				ids[c] = append(ids[c], h.create(org, token, map[string]any{"name": fmt.Sprint("churn ", c, " ", i)}).Key.ID)
			}
			for _, id := range ids[c][:keysEach*3/4] {
				h.rotate(org, id, token, nil)
				h.must(http.StatusNoContent, "DELETE", "/v1/orgs/"+org+"/keys/"+id, token, nil)
			}
		})
	}
	wg.Wait()

	// Reads of the history beside them: pages, listings as of now, and
	// the checkpoints over all of it.
	for _, id := range ids[0][:50] {
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys/"+id+"/events", admin, nil)
	}
	asOf := time.Now().UTC().Format(time.RFC3339Nano)
	for range 10 {
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/keys?as_of="+asOf, admin, nil)
		h.must(http.StatusOK, "GET", "/v1/orgs/acme/events?after_seq=0", admin, nil)
	}
	cp := h.api.Checkpoints.(*events.Checkpointer)
	for {
		wrote, more, err := cp.Once(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !wrote || !more {
			break
		}
	}

	// Every stream saw all of its org's events: two clients' 100
	// creations, 75 rotations and 75 revocations each, and the admin's
	// creation for one that read from the start.
	perOrg := 2 * (keysEach + 2*keysEach*3/4)
	for i, s := range open {
		want := perOrg
		switch i % 4 {
		case 1:
			want++
		case 2:
			want = 2 * keysEach * 3 / 4
		}
		s.next(t, want)
	}
	for _, s := range open[:4] {
		s.quiet(t) // and nothing more, of either org
	}
	time.Sleep(300 * time.Millisecond) // a few heartbeats more
	if err := h.env.Embedded.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := created.Load(); n > 3 {
		t.Errorf("1,000 commands and %d open streams created %d consumers, want at most a few", streams, n)
	} else {
		t.Logf("1,000 commands and %d open streams created %d consumers", streams, n)
	}
}
