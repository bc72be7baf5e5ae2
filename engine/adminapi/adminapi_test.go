package adminapi_test

import (
	"bufio"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp/fasthttputil"

	"github.com/wsbridge/wsbridge/engine/adminapi"
)

// TestUnreadableRequests: what fasthttp refuses before the handler runs
// gets the admin API's answers too: a body far over -max-message 413
// (counted as a too_big push), a request that is not HTTP 400.
func TestUnreadableRequests(t *testing.T) {
	ab := startAdminBridge(t)
	ln := fasthttputil.NewInmemoryListener()
	srv := adminapi.New(ab.srv, adminapi.Config{})
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })

	do := func(raw string) (int, string) {
		t.Helper()
		c, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(fuzzWait))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%.40q: %v", raw, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	huge := strings.Repeat("x", 4*fuzzMaxMessage+8<<10) // past the server's body limit, not only -max-message
	if got, body := do("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: " + strconv.Itoa(len(huge)) + "\r\n\r\n" + huge); got != 413 {
		t.Fatalf("huge push: got %d %q, want 413", got, body)
	}
	if got, body := do("NOT HTTP\r\n\r\n"); got != 400 {
		t.Fatalf("garbage: got %d %q, want 400", got, body)
	}
	_, metrics := do("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
	if want := `wsbridge_pushes_total{outcome="too_big"} 1`; !strings.Contains(metrics, want+"\n") {
		t.Fatalf("metrics lack %s", want)
	}
	for _, p := range ab.peers { // nothing reached a client
		if info, ok := ab.srv.Lookup([]byte(p.id)); !ok || info.MessagesOut != 0 {
			t.Fatalf("%s: open %v, %d messages out, want open with 0", p.id, ok, info.MessagesOut)
		}
	}
}
