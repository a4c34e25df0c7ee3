package backup

// This file speaks NATS's own stream snapshot and restore, which nats.go's
// jetstream package does not wrap (nats-server's jetstream_api.go,
// jsStreamSnapshotRequest and jsStreamRestoreRequest):
//
//   - $JS.API.STREAM.SNAPSHOT.<stream> answers the stream's config and
//     state, then sends the snapshot in chunks to a deliver subject. Each
//     chunk but the last carries a reply subject to acknowledge it on: the
//     server keeps at most a window of chunks unacknowledged, and gives up
//     after 5 s without an acknowledgement. An empty message ends it, with
//     a status header when it failed (408, 500).
//   - $JS.API.STREAM.RESTORE.<stream> takes that config and state and
//     answers a subject to send the chunks to, each as a request the server
//     answers once it has taken it; an empty request ends the restore and
//     is answered with the new stream's info or an error. The server gives
//     up after 5 s without a chunk. The stream must not exist.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
)

const (
	apiSnapshot = "$JS.API.STREAM.SNAPSHOT."
	apiRestore  = "$JS.API.STREAM.RESTORE."

	// chunkSize is asked of the server for a snapshot's chunks and used for
	// a restore's (never above the server's max payload); window bounds
	// the snapshot chunks in flight.
	chunkSize = 256 << 10
	window    = 16 << 20
	// idle is how long a snapshot waits for its next chunk.
	idle = 30 * time.Second
)

// apiError is the error of a JetStream API answer.
type apiError struct {
	Code        int    `json:"code"`
	ErrCode     int    `json:"err_code"`
	Description string `json:"description"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("%s (NATS %d, error %d)", e.Description, e.Code, e.ErrCode)
}

// streamNotFound is JetStream's error code for a missing stream.
const streamNotFound = 10059

// Taken is what the server said of a stream it snapshots: its config and
// state as it sent them, kept verbatim so that a restore gives back every
// field, those this client does not know included.
type Taken struct {
	Config json.RawMessage `json:"config"`
	State  json.RawMessage `json:"state"`
}

// snapshot asks the server for stream's snapshot and writes it to w.
// Consumers are in it when withConsumers is set.
func snapshot(ctx context.Context, nc *nats.Conn, stream string, withConsumers bool, w io.Writer) (Taken, error) {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return Taken{}, err
	}
	defer sub.Unsubscribe()
	// The server sends up to a window ahead: let it all wait here.
	if err := sub.SetPendingLimits(-1, 4*window); err != nil {
		return Taken{}, err
	}
	req, _ := json.Marshal(map[string]any{
		"deliver_subject": inbox, "no_consumers": !withConsumers,
		"chunk_size": chunkSize, "window_size": window,
	})
	var resp struct {
		Taken
		Error *apiError `json:"error"`
	}
	if err := request(ctx, nc, apiSnapshot+stream, req, &resp); err != nil {
		return Taken{}, fmt.Errorf("snapshot of %s: %w", stream, err)
	}
	if resp.Error != nil {
		return Taken{}, fmt.Errorf("snapshot of %s: %w", stream, resp.Error)
	}
	for {
		mctx, cancel := context.WithTimeout(ctx, idle)
		m, err := sub.NextMsgWithContext(mctx)
		cancel()
		if err != nil {
			return Taken{}, fmt.Errorf("snapshot of %s: waiting for the next chunk: %w", stream, err)
		}
		if len(m.Data) == 0 {
			if status := m.Header.Get("Status"); status != "" && status != "204" {
				return Taken{}, fmt.Errorf("snapshot of %s: the server gave up: %s %s", stream, status, m.Header.Get("Description"))
			}
			return resp.Taken, nil
		}
		if _, err := w.Write(m.Data); err != nil {
			return Taken{}, fmt.Errorf("snapshot of %s: %w", stream, err)
		}
		if m.Reply != "" {
			if err := nc.Publish(m.Reply, nil); err != nil {
				return Taken{}, fmt.Errorf("snapshot of %s: acknowledge a chunk: %w", stream, err)
			}
		}
	}
}

// restore creates stream from its config and state, and the snapshot r
// holds; the stream must not exist.
func restore(ctx context.Context, nc *nats.Conn, stream string, t Taken, r io.Reader) error {
	req, _ := json.Marshal(map[string]json.RawMessage{"config": t.Config, "state": t.State})
	var resp struct {
		DeliverSubject string    `json:"deliver_subject"`
		Error          *apiError `json:"error"`
	}
	if err := request(ctx, nc, apiRestore+stream, req, &resp); err != nil {
		return fmt.Errorf("restore of %s: %w", stream, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("restore of %s: %w", stream, resp.Error)
	}
	if resp.DeliverSubject == "" {
		return fmt.Errorf("restore of %s: the server named no subject to send the snapshot to", stream)
	}
	size := chunkSize
	if max := int(nc.MaxPayload()) - 1024; max > 0 && max < size {
		size = max
	}
	buf := make([]byte, size)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if err := chunk(ctx, nc, resp.DeliverSubject, buf[:n]); err != nil {
				return fmt.Errorf("restore of %s: %w", stream, err)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			// The server gives the stream up once it hears nothing for 5 s.
			return fmt.Errorf("restore of %s: %w", stream, err)
		}
	}
	// The empty request ends the transfer; its answer comes once the
	// server has built the stream from all of it.
	var done struct {
		Error *apiError `json:"error"`
	}
	ectx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	m, err := toRestore(ectx, nc, resp.DeliverSubject, nil)
	if err == nil {
		err = json.Unmarshal(m.Data, &done)
	}
	if err != nil {
		return fmt.Errorf("restore of %s: the end of the transfer: %w", stream, err)
	}
	if done.Error != nil {
		return fmt.Errorf("restore of %s: %w", stream, done.Error)
	}
	return nil
}

// chunk sends one chunk of a restore and waits for the server to take it:
// an empty answer, or an error.
func chunk(ctx context.Context, nc *nats.Conn, subject string, data []byte) error {
	cctx, cancel := context.WithTimeout(ctx, idle)
	defer cancel()
	m, err := toRestore(cctx, nc, subject, data)
	if err != nil {
		return err
	}
	if len(m.Data) == 0 {
		return nil
	}
	var resp struct {
		Error *apiError `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		return fmt.Errorf("a chunk's answer: %w", err)
	}
	if resp.Error != nil {
		return resp.Error
	}
	return nil
}

// toRestore sends a request to the subject a restore takes its chunks on.
// On a cluster the server taking the restore subscribes to it on its own
// node; until the routes carry that interest to the client's node, a
// request finds no responder. No responder means no one took it, so it
// is sent again, for up to about a second.
func toRestore(ctx context.Context, nc *nats.Conn, subject string, data []byte) (*nats.Msg, error) {
	m, err := nc.RequestWithContext(ctx, subject, data)
	for wait := 10 * time.Millisecond; errors.Is(err, nats.ErrNoResponders) && wait < time.Second; wait *= 2 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m, err = nc.RequestWithContext(ctx, subject, data)
	}
	return m, err
}

// request sends a JetStream API request and decodes its answer.
func request(ctx context.Context, nc *nats.Conn, subject string, data []byte, into any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
	}
	m, err := nc.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return errors.New("JetStream is not answering (no responders): is JetStream on, and its leader elected?")
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(m.Data, into); err != nil {
		return fmt.Errorf("the server's answer: %w", err)
	}
	return nil
}
