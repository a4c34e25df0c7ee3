package verifier

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/events"
	"github.com/keyledger/keyledger/usage"
)

// report sends the counts recorded here every interval until ctx ends,
// then once more.
func (v *Verifier) report(ctx context.Context, nc *nats.Conn, every time.Duration, log *slog.Logger) {
	to := &reporter{nc: nc, service: v.service, log: log}
	tick := time.NewTicker(every)
	defer tick.Stop()
	warned := false
	for {
		select {
		case <-tick.C:
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if _, err := v.outcomes.Flush(fctx, to); err != nil {
				log.Warn("verifier: the last usage report was not taken", "err", err)
			}
			cancel()
			return
		}
		fctx, cancel := context.WithTimeout(ctx, min(every, 10*time.Second))
		_, err := v.outcomes.Flush(fctx, to)
		cancel()
		switch {
		case err != nil && !warned:
			log.Warn("verifier: keyledger did not take the usage report; it is sent again with the next", "err", err)
			warned = true
		case err == nil:
			warned = false
		}
	}
}

// reporter sends a flush's batches to keyledger as requests on
// events.UsageReportSubject, one keyledger instance answering each.
type reporter struct {
	nc      *nats.Conn
	service string
	log     *slog.Logger
}

// reportHeaderRoom is left of the max payload for a report's headers (its
// service name and id), which NATS counts in it: a message filled to the
// limit would be refused before it is sent, and sent again, refused the
// same, by every later flush.
const reportHeaderRoom = 1 << 10

func (r *reporter) MaxPayload() int {
	return int(min(r.nc.MaxPayload(), usage.MaxReportBytes)) - reportHeaderRoom
}

// Publish sends each message under its id (Nats-Msg-Id), which a resend
// of the batch keeps: the instance that counted it does not count it
// again.
func (r *reporter) Publish(ctx context.Context, ids []string, msgs [][]byte) (uint64, error) {
	for i, raw := range msgs {
		m := nats.NewMsg(events.UsageReportSubject)
		m.Header.Set(events.UsageReportServiceHeader, r.service)
		m.Header.Set(nats.MsgIdHdr, ids[i])
		m.Data = raw
		res, err := r.nc.RequestMsgWithContext(ctx, m)
		if err != nil {
			return 0, fmt.Errorf("usage report: %w", err)
		}
		// Taken: what keyledger refused of it (unknown keys, out of
		// bounds) it would refuse again, so it is not sent again.
		var answer usage.ReportAnswer
		if err := json.Unmarshal(res.Data, &answer); err != nil {
			return 0, fmt.Errorf("usage report: an answer that is not keyledger's: %w", err)
		}
		if answer.Error != "" && r.log != nil {
			r.log.Debug("verifier: keyledger took part of a usage report", "counted", answer.Keys, "why", answer.Error)
		}
	}
	return 0, nil
}
