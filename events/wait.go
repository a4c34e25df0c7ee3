package events

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// UnfitError is a stream or bucket that exists and is refused as it is
// (too few replicas, settings that could lose events): keyledger never
// changes it, so waiting will not help.
type UnfitError struct{ err error }

func (e *UnfitError) Error() string { return e.err.Error() }
func (e *UnfitError) Unwrap() error { return e.err }

func unfit(format string, a ...any) error { return &UnfitError{fmt.Errorf(format, a...)} }

// Lasting reports whether err will not go away by trying again: an
// existing stream or bucket refused as it is, a credential refused or
// denied a permission. Anything else (NATS unreachable, no JetStream
// leader yet, a bucket being created elsewhere, not enough servers yet
// for the replicas asked) may, and a start-up waits it out.
func Lasting(err error) bool {
	var unfit *UnfitError
	return errors.As(err, &unfit) ||
		errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
		errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) ||
		errors.Is(err, nats.ErrPermissionViolation)
}

// Reasons a start-up waits, as /readyz and the log name them: a small
// fixed set, so that they can be alerted on.
const (
	WaitUnreachable  = "NATS unreachable"
	WaitLeader       = "waiting for the JetStream leader"
	WaitNotEnabled   = "JetStream not enabled"
	WaitResources    = "not enough JetStream servers or storage for the replicas asked"
	WaitCreatedElsew = "being created by another instance"
	WaitOther        = "NATS error"
)

// WaitReason names why err, a failed start-up step, is worth waiting out.
func WaitReason(err error) string {
	var apiErr *jetstream.APIError
	var netErr net.Error
	switch {
	case errors.Is(err, nats.ErrNoServers), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.As(err, &netErr) && !netErr.Timeout():
		return WaitUnreachable
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return WaitNotEnabled
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == 10023 || apiErr.ErrorCode == 10005 || strings.Contains(apiErr.Description, "insufficient resources")):
		return WaitResources // 10023 insufficient resources, 10005 no suitable peers for placement
	case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse), errors.Is(err, jetstream.ErrBucketExists):
		return WaitCreatedElsew
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.As(err, &apiErr) && apiErr.Code == 503:
		return WaitLeader
	}
	return WaitOther
}
