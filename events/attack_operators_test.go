package events

import (
	"testing"

	"github.com/nats-io/nats.go/jetstream"
)

// TestAttackUnfitStreamSettingsAreRefused: a stream restored from a forged
// backup (its manifest's configuration is the file's, checked by nothing
// but its own SHA-256), or made by hand, may carry settings that keep
// every deny flag and still move or let others write the history: a
// subject transform stores the events under other subjects than keyledger
// reads a key's by; sources pour another stream's messages in; a counter
// stream refuses keyledger's appends.
func TestAttackUnfitStreamSettingsAreRefused(t *testing.T) {
	want := streamConfig(1)
	for name, change := range map[string]func(*jetstream.StreamConfig){
		"SubjectTransform": func(c *jetstream.StreamConfig) {
			c.SubjectTransform = &jetstream.SubjectTransformConfig{Source: SubjectRoot + ".>", Destination: "elsewhere.>"}
		},
		"Sources": func(c *jetstream.StreamConfig) {
			c.Sources = []*jetstream.StreamSource{{Name: "FORGED"}}
		},
		"MsgCounter": func(c *jetstream.StreamConfig) { c.AllowMsgCounter = true },
	} {
		t.Run(name, func(t *testing.T) {
			have := streamConfig(1)
			change(&have)
			if err := unsafeStream(have, want); err == nil {
				t.Errorf("a stream with %s is taken as fit to hold the history", name)
			}
		})
	}
	if err := unsafeStream(streamConfig(1), want); err != nil {
		t.Errorf("keyledger's own stream is refused: %v", err)
	}
}
