package events

import (
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Why a store's stream is no longer the one it opened (StreamLost).
const (
	StreamDeleted  = "the stream " + StreamName + " was deleted"
	StreamReplaced = "the stream " + StreamName + " was replaced: deleted and created again"
)

// missingAsks is how many answers in a row must say the stream is not
// found before it counts as deleted: not one answer from a JetStream
// meta leader that has just been elected.
const missingAsks = 3

// streamIdentity remembers which stream a store opened, by the time
// NATS created it: a stream deleted and created again under the same
// name has another, whatever it holds. Once lost, it stays lost: what
// appears later under the name is not the history this instance applied.
type streamIdentity struct {
	created time.Time

	mu      sync.Mutex
	missing int
	lost    string
}

// judge reads one answer of the stream's info and returns why the stream
// is lost, or "".
func (id *streamIdentity) judge(info *jetstream.StreamInfo, err error, log *slog.Logger) string {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.lost != "" {
		return id.lost
	}
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		if id.missing++; id.missing < missingAsks {
			return ""
		}
		id.lost = StreamDeleted
		log.Error(StreamDeleted+" under this instance: refusing to serve (restore it from a backup, or check it, and restart)",
			"opened_created", id.created)
	case err != nil:
		return "" // unreachable, or no leader: not a verdict
	case !id.created.IsZero() && !info.Created.Equal(id.created):
		id.lost = StreamReplaced
		log.Error(StreamReplaced+" under this instance: refusing to serve what it now holds (check it, and restart)",
			"opened_created", id.created, "now_created", info.Created, "now_last_seq", info.State.LastSeq)
	default:
		id.missing = 0
	}
	return id.lost
}

// StreamLost says why the stream this store opened is gone (StreamDeleted,
// StreamReplaced); "" while it is the one opened. It is judged on each
// LastSeq, which the projections ask every second.
func (s *Store) StreamLost() string {
	s.identity.mu.Lock()
	defer s.identity.mu.Unlock()
	return s.identity.lost
}
