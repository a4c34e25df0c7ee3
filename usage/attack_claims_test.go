package usage_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/keyledger/keyledger/internal/natstest"
)

// TestAttackReportClaimsDoNotWriteWithoutBound: an instance claims each
// report's Nats-Msg-Id in the outcome stream before counting it, so that
// a resend another instance gets counts once. Each claim is a write into
// KEYLEDGER_USAGE_OUTCOMES. A holder of the read-only credential sending
// reports that count nothing (a key nobody holds, or no line at all),
// each under a new id, had every one of them written: as many writes as
// it sends, pushing the real batches out of the stream's bytes. Now only
// a report that counts something is claimed, at most 600 a minute: the
// rest are counted without (once here, perhaps again elsewhere).
func TestAttackReportClaimsDoNotWriteWithoutBound(t *testing.T) {
	env := natstest.StartListening(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	in := startRed6Instance(t, ctx, env, func(_, id string) bool { return id == "key_known" }, false)
	r := red6Reader(t, env)
	before, err := in.streamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const reports = 2000
	for i := range reports {
		m := report("forger", `{"o":"acme","k":"key_nobody","m":[[1,1,0,0,0,0]]}`)
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("forged-%d", i))
		askReport(t, r, m)
	}
	after, err := in.streamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if wrote := after.State.Msgs - before.State.Msgs; wrote > reports/10 {
		t.Errorf("%d reports counting nothing wrote %d messages into the outcome stream", reports, wrote)
	}

	// Reports that count something, each under a new id: the claims stay
	// within the budget (600 a minute; the run may straddle two minutes).
	const counting = 1500
	for i := range counting {
		m := report("forger", `{"o":"acme","k":"key_known","m":[[`+fmt.Sprint(time.Now().Unix()/60)+`,1,0,0,0,0]]}`)
		m.Header.Set(nats.MsgIdHdr, fmt.Sprintf("counting-%d", i))
		if a := askReport(t, r, m); a.Keys != 1 {
			t.Fatalf("a report of a known key counted %d: %s", a.Keys, a.Error)
		}
	}
	final, err := in.streamInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if wrote := final.State.Msgs - after.State.Msgs; wrote > 1200 {
		t.Errorf("%d reports counting a key wrote %d claims into the outcome stream, over 600 a minute", counting, wrote)
	}
}
