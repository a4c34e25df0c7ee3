// Package alertcheck checks deploy/alerts.yml with Prometheus's own rule
// parser. It is a module of its own so that Prometheus, a heavy module,
// never enters keyledger's build: TestAlertRules in cmd/keyledger runs
// it, with the metric names a running instance exports.
package alertcheck

import (
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// TestAlertRulesParse: the file loads as Prometheus loads a rule file
// (unknown fields refused, every expression and template checked); with
// KEYLEDGER_METRICS (a comma-separated list of exported names) every
// metric an alert selects is one of them, or Prometheus's own up.
func TestAlertRulesParse(t *testing.T) {
	p := parser.NewParser(parser.Options{})
	groups, errs := rulefmt.ParseFile("../alerts.yml", false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	exported := map[string]bool{"up": true}
	list := os.Getenv("KEYLEDGER_METRICS")
	for _, name := range strings.Split(list, ",") {
		exported[name] = true
	}
	alerts := 0
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts++
			expr, err := p.ParseExpr(r.Expr)
			if err != nil {
				t.Fatalf("%s: %v", r.Alert, err)
			}
			var names []string
			parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					names = append(names, vs.Name)
				}
				return nil
			})
			if len(names) == 0 {
				t.Errorf("%s selects no metric", r.Alert)
			}
			for _, name := range names {
				if list != "" && !exported[name] {
					t.Errorf("%s selects %s, which keyledger does not export", r.Alert, name)
				}
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s has no severity or no summary", r.Alert)
			}
		}
	}
	if alerts == 0 {
		t.Fatal("no alert in deploy/alerts.yml")
	}
	if list == "" {
		t.Logf("%d alerts parse; KEYLEDGER_METRICS unset, so their metric names were not checked (TestAlertRules in cmd/keyledger sets it)", alerts)
	} else {
		t.Logf("%d alerts parse, each selecting metrics keyledger exports", alerts)
	}
}
