package http_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/keyledger/keyledger/domain"
	khttp "github.com/keyledger/keyledger/http"
)

// TestAttackEventStreamOutlivesItsCredential: an event stream is checked
// against its credential at every batch and heartbeat, and ends at the
// credential's own end (a token's exp, a key's expiry) even while idle. A
// revoked, rotated-away or expired key, or a token past its exp, reads no
// event more.
func TestAttackEventStreamOutlivesItsCredential(t *testing.T) {
	p := newIDP(t)
	p.addKey("rsa-1", jose.RS256, true)
	h := startWith(t, t.TempDir(), func(s *khttp.Server) {
		withOIDC(p, khttp.Limit{})(s)
		s.Heartbeat = time.Hour // here only a batch, or the credential's end, may end a stream
	})
	admin := h.bootstrap("acme")
	h.waitDiscovered(p.sign("rsa-1", p.claims()))

	// ends waits for the server to end s, then makes sure that a key
	// created afterwards never reached it.
	ends := func(t *testing.T, s *sseStream) {
		t.Helper()
		select {
		case <-s.ended:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream still runs 10 s after its credential stopped")
		}
		marker := h.create("acme", admin, map[string]any{"name": "after the end"}).Key.ID
		for {
			select {
			case e := <-s.events:
				if strings.Contains(e.data, marker) {
					t.Errorf("the stream delivered %s after its credential stopped", e.event)
				}
			default:
				return
			}
		}
	}
	// cutThenEnds sees the stream deliver, stops its credential, and
	// expects the stream to end without delivering what followed.
	cutThenEnds := func(t *testing.T, s *sseStream, cut func()) {
		t.Helper()
		h.create("acme", admin, map[string]any{"name": "seen"})
		s.next(t, 1) // the stream is live: it delivers
		cut()
		ends(t, s)
	}
	mgr := func(t *testing.T) issued {
		return h.create("acme", admin, map[string]any{"name": "manager " + t.Name(), "scopes": []string{"keys:manage"}})
	}
	reader := func(t *testing.T, extra map[string]any) issued {
		body := map[string]any{"name": "reader " + t.Name(), "scopes": []string{khttp.ScopeEventsRead}}
		for k, v := range extra {
			body[k] = v
		}
		return h.create("acme", admin, body)
	}

	t.Run("RevokedManagementKey", func(t *testing.T) {
		m := mgr(t)
		s := h.openStream("/v1/orgs/acme/events/stream", m.Secret)
		cutThenEnds(t, s, func() { h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+m.Key.ID, admin, nil) })
	})

	t.Run("RotatedAwayManagementKey", func(t *testing.T) {
		m := mgr(t)
		s := h.openStream("/v1/orgs/acme/events/stream", m.Secret)
		cutThenEnds(t, s, func() { h.rotate("acme", m.Key.ID, admin, nil) }) // no grace: the old value stops at once
	})

	t.Run("RevokedEventsReadKey", func(t *testing.T) {
		r := reader(t, nil)
		s := h.openStream("/v1/events/stream", r.Secret)
		cutThenEnds(t, s, func() { h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+r.Key.ID, admin, nil) })
	})

	t.Run("RevokedKeyOnAStreamFilteredToOtherTypes", func(t *testing.T) {
		r := reader(t, nil)
		s := h.openStream("/v1/events/stream?types=KeyRotated", r.Secret)
		other := h.create("acme", admin, map[string]any{"name": "rotated"})
		h.rotate("acme", other.Key.ID, admin, nil)
		s.next(t, 1) // the stream is live: it delivers
		// Its own revocation is not among the types it reads: still a
		// batch, and the stream is checked there.
		h.must(http.StatusNoContent, "DELETE", "/v1/orgs/acme/keys/"+r.Key.ID, admin, nil)
		ends(t, s)
	})

	t.Run("KeyExpiringWhileIdle", func(t *testing.T) {
		expires := time.Now().Add(2 * time.Second).UTC()
		r := reader(t, map[string]any{"expires_at": expires.Format(time.RFC3339Nano)})
		s := h.openStream("/v1/events/stream", r.Secret)
		ends(t, s)
		if now := time.Now(); now.Before(expires) {
			t.Errorf("the stream ended %s before its key expired", expires.Sub(now))
		}
	})

	t.Run("GraceEndingWhileIdle", func(t *testing.T) {
		r := reader(t, nil)
		start := time.Now()
		h.rotate("acme", r.Key.ID, admin, map[string]any{"grace_period_seconds": 2})
		s := h.openStream("/v1/events/stream", r.Secret) // the replaced value, deprecated for 2 s
		ends(t, s)
		if time.Since(start) < 2*time.Second {
			t.Errorf("the stream of a deprecated value ended %s after the rotation, before its grace ended", time.Since(start))
		}
	})

	t.Run("ManagerTokenPastItsExpWhileIdle", func(t *testing.T) {
		exp := time.Now().Add(2 * time.Second).Truncate(time.Second)
		token := p.sign("rsa-1", p.claims(func(c map[string]any) { c["exp"] = exp.Unix() }))
		s := h.openStream("/v1/orgs/acme/events/stream", token)
		ends(t, s)
		if now := time.Now(); now.Before(exp) {
			t.Errorf("the stream ended %s before its token's exp", exp.Sub(now))
		}
	})

	t.Run("ValidCredentialsKeepStreaming", func(t *testing.T) {
		token := p.sign("rsa-1", p.claims())
		m := mgr(t)
		r := reader(t, nil)
		streams := []*sseStream{
			h.openStream("/v1/orgs/acme/events/stream", token),
			h.openStream("/v1/orgs/acme/events/stream", m.Secret),
			h.openStream("/v1/events/stream", r.Secret),
		}
		for range 3 {
			h.create("acme", admin, map[string]any{"name": "still seen"})
		}
		for i, s := range streams {
			s.next(t, 3)
			select {
			case <-s.ended:
				t.Errorf("stream %d of a valid credential ended", i)
			default:
			}
		}
	})
}

// TestAttackEventStreamOnALaggingInstance: a key revoked on another
// instance, while this one has not applied the revocation yet, reads no
// event from its stream here past the point this instance has checked it
// at, though the events are in NATS already; once the revocation is
// applied here, the stream ends.
func TestAttackEventStreamOnALaggingInstance(t *testing.T) {
	lg := startLagging(t, func(s *khttp.Server) { s.Heartbeat = 100 * time.Millisecond })
	m := lg.create("acme", lg.admin, map[string]any{"name": "doomed", "scopes": []string{"keys:manage"}})
	s := lg.openStream("/v1/orgs/acme/events/stream", m.Secret)
	lg.lag.hold(t, lg.env.LastSeq(t))
	ctx := context.Background()
	if _, err := lg.writer.keys.Revoke(ctx, "acme", m.Key.ID, domain.RevokeKey{By: asSystem}); err != nil {
		t.Fatal(err)
	}
	marker, err := lg.writer.keys.Create(ctx, domain.CreateKey{OrgID: "acme", Name: "after the revocation", By: asSystem})
	if err != nil {
		t.Fatal(err)
	}
	// Heartbeats come and go meanwhile: each reads the stream, which holds
	// both events, and checks the key against what this instance knows.
	for range 3 {
		select {
		case <-s.comments:
		case <-time.After(10 * time.Second):
			t.Fatal("no heartbeat within 10s")
		}
	}
	lg.lag.release()
	select {
	case <-s.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream still runs 10 s after this instance applied its key's revocation")
	}
	for {
		select {
		case e := <-s.events:
			if strings.Contains(e.data, marker.Key.ID) || e.event == "KeyRevoked" {
				t.Errorf("the stream of a key revoked elsewhere delivered %s %s", e.event, e.data)
			}
		default:
			return
		}
	}
}
