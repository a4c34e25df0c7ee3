package http_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/keyledger/keyledger/domain"
	"github.com/keyledger/keyledger/webhooks"
)

// garbledReceiver answers every request with a status line of size
// control bytes: the HTTP client's error quotes the whole line back.
func garbledReceiver(t *testing.T, size int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				_, _ = io.WriteString(c, strings.Repeat("\x01", size)+"\r\n\r\n")
			}()
		}
	}()
	return "http://" + ln.Addr().String() + "/hook"
}

// An attempt keeps at most 1 KiB of what a receiver answered, but its
// error was kept whole, and a receiver writes that too: a status line of
// 15,000 control bytes came back quoted, four bytes each, in a 60 KiB
// error. Every attempt an endpoint kept (100), on each of an org's 20
// endpoints, was 60 times what the bound allows, in the attempts stream
// every org shares (1 GiB, oldest dropped first: a few orgs' receivers
// pushed every other org's deliveries out); and the page read 50 of them
// on every refresh, and put a whole one in its notice after a test event.
// An error is kept no longer than a response.
func TestAttackWebhooksPageAReceiverCannotSwellItsAttempts(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	var created struct{ Webhook pageWebhook }
	h.must(201, "POST", "/v1/orgs/acme/webhooks", admin, map[string]any{"url": garbledReceiver(t, 15000)}).json(t, &created)
	base := "/v1/orgs/acme/webhooks/" + created.Webhook.ID

	var a struct{ Result, Error string }
	h.must(200, "POST", base+"/test", admin, nil).json(t, &a)
	if a.Result != "failed" || a.Error == "" {
		t.Fatalf("the test event to a garbling receiver: %+v, want failed with an error", a)
	}
	if len(a.Error) > webhooks.ResponseKept {
		t.Errorf("the attempt keeps a %d-byte error the receiver wrote, want at most %d", len(a.Error), webhooks.ResponseKept)
	}
	listing := h.must(200, "GET", base+"/deliveries", admin, nil)
	if n := len(listing.body); n > 4*webhooks.ResponseKept {
		t.Errorf("one attempt lists in %d bytes, want under %d", n, 4*webhooks.ResponseKept)
	}
}

// The create dialog's URL may hold the receiver's token. A create the API
// refused, then cancelled, left it in the closed dialog's field until the
// next Add: the one path on which it did not leave the page with the
// dialog.
func TestAttackWebhooksPageACancelledURLLeavesThePage(t *testing.T) {
	h := start(t)
	admin := h.bootstrap("acme", domain.ScopeManage, domain.ScopeWebhooks)
	b := newBrowser(t, 1280, 900)
	b.signIn(t, h, "acme", admin)
	b.do(t, chromedp.WaitVisible("#wh-empty"))
	for _, shut := range []chromedp.Action[chromedp.Void]{chromedp.Click("#wh-create-dialog .cancel"), chromedp.KeyEvent(kb.Escape)} {
		b.do(t,
			chromedp.Click("#wh-add"),
			chromedp.WaitVisible("#wh-create-dialog"),
			chromedp.SendKeys("#wh-url", "ftp://hooks.example.com/services/T0KEN"),
			chromedp.Click("#wh-create-form button[type=submit]"),
			chromedp.WaitVisible("#wh-create-error"),
			shut,
			chromedp.WaitNotVisible("#wh-create-dialog"),
		)
		// The dialog's close event, which resets the form, comes as a task
		// after it is hidden: wait for it, a while.
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](`!document.getElementById("wh-url").value.includes("T0KEN")`, chromedp.WithPollingInterval(20*time.Millisecond)))
		cancel()
		if err != nil {
			v := run(t, b, chromedp.Evaluate[string](`document.getElementById("wh-url").value`))
			t.Errorf("the closed dialog still holds the URL %q (%v)", v, err)
		}
	}
}
