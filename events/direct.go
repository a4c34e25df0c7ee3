package events

// Reads of the history without consumers. Every scan used to create an
// ephemeral consumer and delete it again: a command's Load, a history
// page, a checkpoint, each loop of an event stream. In a cluster each of
// those goes through the meta leader. A scan now asks the stream itself
// with JetStream's batch direct get (nats-server 2.11 and later): one
// request returns up to directBatch messages matching a filter from a
// sequence on, ended by an EOB status, with no consumer anywhere.

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/keyledger/keyledger/domain"
)

const (
	// directBatch is how many messages one direct get asks for: a key's
	// whole history in one request, and the memory of a scan stays flat.
	directBatch = 256
	// directMaxBytes bounds one answer; the server stops early past it.
	directMaxBytes = 4 << 20
	// jsMessageNotFound is JetStream's error code for no such message.
	jsMessageNotFound = 10037
)

// directRequest is JetStream's message get request (JSApiMsgGetRequest).
type directRequest struct {
	Seq      uint64 `json:"seq,omitempty"`
	NextFor  string `json:"next_by_subj,omitempty"`
	LastFor  string `json:"last_by_subj,omitempty"`
	Batch    int    `json:"batch,omitempty"`
	MaxBytes int    `json:"max_bytes,omitempty"`
}

// apiPrefix is where js sends its API requests.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	}
	return jetstream.DefaultAPIPrefix
}

// withTimeout gives ctx a deadline when it has none: a request to a
// server that never answers must end.
func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, 5*time.Second)
}

// directGet asks any replica of the stream for up to n messages matching
// filter from sequence from on. pending is how many more matched, beyond
// the first message returned, when the replica answered (the first
// message's Nats-Num-Pending); none returned: nothing matches.
func (s *Store) directGet(ctx context.Context, filter string, from uint64, n int) (msgs []Msg, pending uint64, err error) {
	return s.directGetIn(ctx, StreamName, filter, from, n)
}

// directGetIn is directGet on another stream of the same account (the
// snapshot bucket's).
func (s *Store) directGetIn(ctx context.Context, stream, filter string, from uint64, n int) (msgs []Msg, pending uint64, err error) {
	req, err := json.Marshal(directRequest{Seq: from, NextFor: filter, Batch: n, MaxBytes: directMaxBytes})
	if err != nil {
		return nil, 0, domain.Wrap(domain.EINTERNAL, err, "cannot ask for the history")
	}
	nc := s.js.Conn()
	sub, err := nc.SubscribeSync(nc.NewInbox())
	if err != nil {
		return nil, 0, unreachable(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(s.api+"DIRECT.GET."+stream, sub.Subject, req); err != nil {
		return nil, 0, unreachable(err)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	for {
		m, err := sub.NextMsgWithContext(ctx)
		if err != nil {
			return nil, 0, unreachable(err)
		}
		stored, seq, subject, np, ok := fromDirect(m.Header, true)
		if !ok {
			switch status := m.Header.Get("Status"); status {
			case "204": // end of the batch
				return msgs, pending, nil
			case "404": // nothing at or after from
				return nil, 0, nil
			default:
				return nil, 0, unreachable(errors.New("direct get: " + status + " " + m.Header.Get("Description")))
			}
		}
		if seq == 0 || seq < from || len(msgs) > 0 && seq <= msgs[len(msgs)-1].Seq {
			return nil, 0, domain.Errorf(domain.EINTERNAL, "a stored message has no sequence in order")
		}
		if len(msgs) == 0 {
			pending = np
		}
		msgs = append(msgs, Msg{Seq: seq, Subject: subject, Header: stored, Data: m.Data})
	}
}

// batchHeaders are what the server adds to each stored message it
// answers a batch direct get with, after the message's own headers.
// Of a single message's answer, only the first four.
var batchHeaders = [...]string{jetstream.StreamHeader, jetstream.SubjectHeader, jetstream.SequenceHeader,
	jetstream.TimeStampHeaer, "Nats-Num-Pending", "Nats-Last-Sequence"}

// fromDirect separates a message of a direct get's answer (batch: of a batch) into the
// stored message's own headers and what the server says of it: its
// sequence, subject and how many more match. ok is false for the
// server's status messages (the end of the batch, an error), which carry
// no sequence.
//
// A stored message's own headers come first and are whatever its
// publisher wrote, the service credential's holder included: a "Status",
// a "Nats-Sequence" or a "Nats-Num-Pending" among them is no word of the
// server's. The server's come last, so only the last value of each
// counts, and a message with a sequence is never a status.
func fromDirect(h nats.Header, batch bool) (stored nats.Header, seq uint64, subject string, pending uint64, ok bool) {
	if len(h[jetstream.SequenceHeader]) == 0 {
		return nil, 0, "", 0, false
	}
	last := func(name string) string {
		v := h[name]
		if len(v) == 0 {
			return ""
		}
		if len(v) == 1 {
			delete(h, name)
		} else {
			h[name] = v[:len(v)-1]
		}
		return v[len(v)-1]
	}
	var added [len(batchHeaders)]string
	for i, name := range batchHeaders {
		if batch || i < 4 {
			added[i] = last(name)
		}
	}
	seq, _ = strconv.ParseUint(added[2], 10, 64)
	pending, _ = strconv.ParseUint(added[4], 10, 64)
	return h, seq, added[1], pending, true
}

// lastFor returns the last message stored on subject; ok is false when
// there is none. It reads by direct get when the stream allows it, as
// nats.go's GetLastMsgForSubject does, but takes the sequence and the
// subject from the server's headers only (fromDirect): nats.go takes the
// first of each, which the message's publisher may have written.
func (s *Store) lastFor(ctx context.Context, subject string) (m Msg, ok bool, err error) {
	if !s.direct {
		return s.leaderGet(ctx, directRequest{LastFor: subject})
	}
	req, err := json.Marshal(directRequest{LastFor: subject})
	if err != nil {
		return m, false, domain.Wrap(domain.EINTERNAL, err, "cannot ask for the history")
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	res, err := s.js.Conn().RequestWithContext(ctx, s.api+"DIRECT.GET."+StreamName, req)
	if err != nil {
		return m, false, unreachable(err)
	}
	stored, seq, subj, _, ok := fromDirect(res.Header, false)
	switch status := res.Header.Get("Status"); {
	case ok && seq > 0:
		return Msg{Seq: seq, Subject: subj, Header: stored, Data: res.Data}, true, nil
	case !ok && status == "404":
		return m, false, nil
	default:
		return m, false, unreachable(errors.New("direct get: " + status + " " + res.Header.Get("Description")))
	}
}

// Msg returns the stream's message at seq; ok is false when there is
// none. Unlike nats.go's GetMsg on a stream that allows direct gets, its
// sequence and subject are the server's, never headers the message's
// publisher wrote. Returns EUNAVAILABLE.
func (s *Store) Msg(ctx context.Context, seq uint64) (m Msg, ok bool, err error) {
	m, ok, err = s.leaderGet(ctx, directRequest{Seq: seq})
	if ok && m.Seq != seq {
		return m, false, unreachable(errors.New("message get: another message than asked for"))
	}
	return m, ok, err
}

// leaderNext asks the stream's leader for the first message matching
// filter at or after from (JetStream's message get, which only the leader
// answers); ok is false when there is none.
func (s *Store) leaderNext(ctx context.Context, filter string, from uint64) (m Msg, ok bool, err error) {
	return s.leaderGet(ctx, directRequest{Seq: from, NextFor: filter})
}

// leaderGet is JetStream's message get, answered by the stream's leader.
func (s *Store) leaderGet(ctx context.Context, r directRequest) (m Msg, ok bool, err error) {
	req, err := json.Marshal(r)
	if err != nil {
		return m, false, domain.Wrap(domain.EINTERNAL, err, "cannot ask for the history")
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	res, err := s.js.Conn().RequestWithContext(ctx, s.api+"STREAM.MSG.GET."+StreamName, req)
	if err != nil {
		return m, false, unreachable(err)
	}
	var got struct {
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Header  []byte `json:"hdrs"`
			Data    []byte `json:"data"`
		} `json:"message"`
	}
	if err := json.Unmarshal(res.Data, &got); err != nil {
		return m, false, unreachable(err)
	}
	switch {
	case got.Error != nil && got.Error.ErrCode == jsMessageNotFound:
		return m, false, nil
	case got.Error != nil:
		return m, false, unreachable(errors.New("message get: " + got.Error.Description))
	case got.Message == nil:
		return m, false, unreachable(errors.New("message get: an empty answer"))
	}
	m = Msg{Seq: got.Message.Seq, Subject: got.Message.Subject, Data: got.Message.Data}
	if len(got.Message.Header) > 0 {
		if m.Header, err = nats.DecodeHeadersMsg(got.Message.Header); err != nil {
			return m, false, domain.Wrap(domain.EINTERNAL, err, "a stored message has unreadable headers")
		}
	}
	return m, true, nil
}

func unreachable(err error) error {
	return domain.Wrap(domain.EUNAVAILABLE, err, "the event store cannot be reached")
}

// cursor reads the messages matching one filter from a sequence on, in
// order, as many as matched when it started (as a consumer's pending
// count did), a batch at a time.
//
// Any replica answers a direct get, and a follower may lag its leader by
// a few messages. So on a replicated stream, once the replica's count is
// read, the leader is asked for the next message: if it holds one the
// replica had not, the cursor goes on from the leader, a message at a
// time, up to the leader's last sequence then. Reads are never older
// than the leader was when the scan ended.
type cursor struct {
	s      *Store
	filter string
	from   uint64 // the next sequence to ask from
	total  uint64 // matched when the scan started
	left   uint64 // of those, still to read
	buf    []Msg
	begun  bool
	asked  bool   // the leader was asked, once the replica's count was read
	upTo   uint64 // reading from the leader: up to this sequence
	done   bool
	first  int // how many the first batch asks for
	// wire is the filter sent with each batch: none for one that takes
	// (nearly) the whole stream, as a subject filter with a wildcard costs
	// the server a walk of every subject it stores on every message it
	// answers (minutes for a scan of a million keys' events); keep then
	// drops, here, what the filter would not have matched. total and left
	// count what the server sends, those dropped here included.
	wire string
	keep func(subject string) bool
}

// newCursor starts a cursor; of several read side by side, each asks for
// a smaller first batch, as all are read before any message is used.
func newCursor(s *Store, filter string, from uint64, of int) *cursor {
	if filter == "" {
		filter = ">"
	}
	c := &cursor{s: s, filter: filter, from: max(from, 1), first: max(8, directBatch/of), wire: filter}
	switch filter {
	case ">":
		c.wire = ""
	case SubjectRoot + ".>": // every event: all but the checkpoints
		c.wire = ""
		c.keep = func(subject string) bool { return strings.HasPrefix(subject, SubjectRoot+".") }
	}
	return c
}

// peek returns the cursor's next message; ok is false at its end.
func (c *cursor) peek(ctx context.Context) (m Msg, ok bool, err error) {
	for len(c.buf) == 0 && !c.done {
		if err := c.fetch(ctx); err != nil {
			return m, false, err
		}
	}
	if len(c.buf) == 0 {
		return m, false, nil
	}
	return c.buf[0], true, nil
}

func (c *cursor) pop() { c.buf = c.buf[1:] }

func (c *cursor) fetch(ctx context.Context) error {
	switch {
	case c.upTo > 0:
		return c.fetchLeader(ctx)
	case c.begun && c.left == 0:
		if c.asked || c.s.replicas <= 1 {
			c.done = true
			return nil
		}
		c.asked = true
		m, ok, err := c.s.leaderNext(ctx, c.filter, c.from)
		if err != nil || !ok {
			c.done = true
			return err
		}
		last, err := c.s.LastSeq(ctx)
		if err != nil {
			return err
		}
		c.upTo = max(last, m.Seq)
		c.buf, c.from = append(c.buf, m), m.Seq+1
		return nil
	}
	n := c.first
	if c.begun {
		n = int(min(c.left, directBatch))
	}
	msgs, pending, err := c.s.directGet(ctx, c.wire, c.from, n)
	if err != nil {
		return err
	}
	if !c.begun {
		c.begun = true
		if len(msgs) > 0 {
			c.total = pending + 1
		}
		c.left = c.total
	}
	if c.left > 0 && len(msgs) == 0 {
		return domain.Errorf(domain.EUNAVAILABLE, "the event store did not deliver the stream")
	}
	msgs = msgs[:min(uint64(len(msgs)), c.left)] // those stored since the scan began wait for the next
	c.left -= uint64(len(msgs))
	if len(msgs) > 0 {
		c.from = msgs[len(msgs)-1].Seq + 1
	}
	c.buf = msgs
	if c.keep != nil {
		c.buf = slices.DeleteFunc(msgs, func(m Msg) bool { return !c.keep(m.Subject) })
	}
	return nil
}

func (c *cursor) fetchLeader(ctx context.Context) error {
	if c.from > c.upTo {
		c.done = true
		return nil
	}
	m, ok, err := c.s.leaderNext(ctx, c.filter, c.from)
	if err != nil {
		return err
	}
	if !ok || m.Seq > c.upTo {
		c.done = true
		return nil
	}
	c.buf, c.from = append(c.buf, m), m.Seq+1
	return nil
}

// scanDirect is scan by direct gets: one cursor per filter, merged in
// stream order.
func (s *Store) scanDirect(ctx context.Context, filters []string, from uint64, onTotal func(uint64) error, fn func(Msg) error) error {
	curs := make([]*cursor, len(filters))
	var total uint64
	for i, f := range filters {
		curs[i] = newCursor(s, f, from, len(filters))
		if _, _, err := curs[i].peek(ctx); err != nil {
			return err
		}
		total += curs[i].total
	}
	if err := onTotal(total); err != nil {
		return err
	}
	for {
		var next *cursor
		var first uint64
		for _, c := range curs {
			m, ok, err := c.peek(ctx)
			if err != nil {
				return err
			}
			if ok && (next == nil || m.Seq < first) {
				next, first = c, m.Seq
			}
		}
		if next == nil {
			return nil
		}
		m := next.buf[0]
		next.pop()
		if err := fn(m); err != nil {
			return err
		}
	}
}

// ConsumerCount counts the consumers a JetStream client asks the server
// to create, whoever asks (a scan without direct gets, the projection
// feed and its resets, webhook deliveries): give Trace to jetstream.New.
// Each creation is a request to the stream's leader, and on a replicated
// stream a proposal through the meta leader: it should stay near the
// number of long-lived readers, not grow with requests.
type ConsumerCount struct{ n atomic.Uint64 }

// Trace is the option of jetstream.New that counts.
func (c *ConsumerCount) Trace() jetstream.JetStreamOpt {
	return jetstream.WithClientTrace(&jetstream.ClientTrace{RequestSent: func(subj string, _ []byte) {
		if strings.Contains(subj, ".CONSUMER.CREATE.") || strings.Contains(subj, ".CONSUMER.DURABLE.CREATE.") {
			c.n.Add(1)
		}
	}})
}

// Created returns how many consumers were asked for so far.
func (c *ConsumerCount) Created() uint64 { return c.n.Load() }
