package events_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/internal/natstest"
)

func TestWaitReason(t *testing.T) {
	for _, tc := range []struct {
		err     error
		reason  string
		lasting bool
	}{
		{fmt.Errorf("connect to NATS at x: %w", nats.ErrNoServers), events.WaitUnreachable, false},
		{fmt.Errorf("open stream KEYLEDGER: %w", context.DeadlineExceeded), events.WaitLeader, false},
		{nats.ErrNoResponders, events.WaitLeader, false},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, events.WaitLeader, false},
		{&jetstream.APIError{Code: 500, ErrorCode: 10023, Description: "insufficient resources"}, events.WaitResources, false},
		{fmt.Errorf("x: %w", jetstream.ErrJetStreamNotEnabled), events.WaitNotEnabled, false},
		{errors.Join(jetstream.ErrBucketExists, jetstream.ErrStreamNameAlreadyInUse), events.WaitCreatedElsew, false},
		{nats.ErrAuthorization, events.WaitOther, true},
		{fmt.Errorf("x: %w", nats.ErrPermissionViolation), events.WaitOther, true},
	} {
		if got := events.WaitReason(tc.err); got != tc.reason {
			t.Errorf("WaitReason(%v) = %q, want %q", tc.err, got, tc.reason)
		}
		if got := events.Lasting(tc.err); got != tc.lasting {
			t.Errorf("Lasting(%v) = %v, want %v", tc.err, got, tc.lasting)
		}
	}
}

// TestAnUnfitStreamIsLasting: a stream that could lose events is refused
// for good, not waited on.
func TestAnUnfitStreamIsLasting(t *testing.T) {
	env := natstest.Start(t)
	cfg := streamConfig(t, env)
	cfg.DenyDelete = false
	natstest.Recreate(t, testCtx(t), env.JS, cfg)
	_, err := events.Open(testCtx(t), env.JS, env.Config(natstest.Quiet()))
	if err == nil || !events.Lasting(err) {
		t.Errorf("Open on a stream that allows deletes: %v, want a lasting refusal", err)
	}
}

func TestConnectErrorHidesURLSecrets(t *testing.T) {
	_, err := events.Connect("nats://user:hunter2@127.0.0.1:1,nats://s3cr3ttoken@127.0.0.1:2", nats.Timeout(100*time.Millisecond))
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if msg := err.Error(); strings.Contains(msg, "hunter2") || strings.Contains(msg, "s3cr3ttoken") || !strings.Contains(msg, "127.0.0.1:2") {
		t.Errorf("Connect error = %q: it must name the servers and hide their secrets", msg)
	}
}
