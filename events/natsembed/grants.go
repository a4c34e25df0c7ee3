package natsembed

import (
	"fmt"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/keyledger/keyledger/events"
)

// The read-only users live in an account of their own, ReadAccount, which
// holds no stream and imports from the account of the service (the one
// holding KEYLEDGER) exactly what a verifier or an auditor reads. It is
// not enough to grant them the JetStream API requests they make in the
// service's account: NATS does not check a request's reply subject
// against its sender's permissions, and JetStream answers in the
// account's name, so a stream info asked for with the reply subject
// keyledger.events.<org>.<key>.revoked was stored in KEYLEDGER (and one
// answered into $KV.<bucket>.<key> overwrote a bucket's entry). Across a
// service import the server answers to a reply subject of its own, which
// it maps back into the importing account: whatever reply a read-only
// user names, the answer lands in ReadAccount, where no stream is.
const (
	// ServiceAccount holds the stream and the buckets in an operator's
	// own deployment (keyledger nats-credentials). The embedded server
	// keeps them in NATS's global account, where data directories of
	// earlier releases have them.
	ServiceAccount = "KEYLEDGER"
	// ReadAccount is the account of verifiers and auditors.
	ReadAccount = "KEYLEDGER_READ"
)

// readService is one JetStream API request ReadAccount imports from the
// service's account (under SubscriberDomain's prefix in ReadAccount,
// $JS.API. in the service's account); streamed when one request may have
// many answers (a batch of direct gets).
type readService struct {
	local, export string
	streamed      bool
}

// readServices are the JetStream requests of a verifier or an auditor:
// read stream info and messages (direct gets by sequence: batches,
// streamed, and the leader's message get), and read the newest snapshot as
// events.Snapshots.Get reads it (the bucket's stream info, direct gets of
// the object's metadata and of its chunks; keyledger makes the bucket with
// direct gets on). No consumer, of the stream or the bucket: every holder
// of the shared credential sees the others' inboxes, and so the names of
// their consumers, and may change one by its name (a filter that leaves
// the revocations out kept a revoked key VALID in another verifier for
// good); the stream allows 1,000 consumers by default, which one reader
// filled in under 2 s, and then neither the service nor any verifier could
// make one; and NATS does not check a push consumer's deliver subject
// against its creator's permissions (one delivering the bucket into
// keyledger.events.> wrote into the event stream). A reader follows the
// stream by direct gets (events.Store.FollowRaw). No publish to the
// bucket's subjects, no purge, no delete. And one request that is not
// JetStream's: a verifier's usage report (events.UsageReportSubject),
// answered by one keyledger instance, which checks what it says.
//
// The requests are imported under the domain's prefix, not as $JS.API.…:
// a server running JetStream answers $JS.API.… in an account without
// JetStream too ("JetStream not enabled for account"), and that answer
// would come first.
func readServices() []readService {
	kl, snap := events.StreamName, events.SnapshotStream
	api := func(rest string, streamed bool) readService {
		return readService{"$JS." + events.SubscriberDomain + ".API." + rest, "$JS.API." + rest, streamed}
	}
	return []readService{
		api("STREAM.INFO."+kl, false),
		api("STREAM.MSG.GET."+kl, false),
		api("DIRECT.GET."+kl, true),
		api("DIRECT.GET."+kl+".>", true),
		api("STREAM.INFO."+snap, false),
		api("DIRECT.GET."+snap, true),
		api("DIRECT.GET."+snap+".>", true),
		// A Go verifier's usage report, answered by one instance.
		{events.UsageReportSubject, events.UsageReportSubject, false},
	}
}

// readResponseThreshold is how long the server keeps a streamed answer's
// way back across the import (the default is 2 minutes): a reader asking
// batches whose answers it never reads holds about 445 bytes of the
// server's memory per request for that long. keyledger's own reads wait
// at most 5 s for a batch.
const readResponseThreshold = 10 * time.Second

// readStream is what ReadAccount imports as a stream: the events as they
// are published, for verifiers that follow them with a plain
// subscription.
const readStream = events.SubjectRoot + ".>"

// readAccounts are the embedded server's accounts: the global one (where
// the service is, with what it exports to ReadAccount) and ReadAccount
// with its imports.
func readAccounts() (global, read *server.Account, err error) {
	global, read = server.NewAccount(server.DEFAULT_GLOBAL_ACCOUNT), server.NewAccount(ReadAccount)
	for _, s := range readServices() {
		rt := server.Singleton
		if s.streamed {
			rt = server.Streamed
		}
		if err := global.AddServiceExportWithResponse(s.export, rt, []*server.Account{read}); err != nil {
			return nil, nil, fmt.Errorf("export %s: %w", s.export, err)
		}
		if s.streamed {
			if err := global.SetServiceExportResponseThreshold(s.export, readResponseThreshold); err != nil {
				return nil, nil, fmt.Errorf("export %s: %w", s.export, err)
			}
		}
		if err := read.AddServiceImport(global, s.local, s.export); err != nil {
			return nil, nil, fmt.Errorf("import %s: %w", s.local, err)
		}
	}
	if err := global.AddStreamExport(readStream, []*server.Account{read}); err != nil {
		return nil, nil, fmt.Errorf("export %s: %w", readStream, err)
	}
	if err := read.AddStreamImport(global, readStream, ""); err != nil {
		return nil, nil, fmt.Errorf("import %s: %w", readStream, err)
	}
	return global, read, nil
}
