package examples_test

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestPHPBatch: the wsbridge binary with -backend-batch-url against real
// php -S running examples/php/batch.php (examples/testdata/batch_router.php):
// text replies, binary replies byte for byte (NUL, newlines, invalid
// UTF-8), a message without a reply, metadata in both directions, and
// several clients at once, each in order.
func TestPHPBatch(t *testing.T) {
	needTools(t, "php")
	bin := buildBridge(t)
	php := servePHP(t, filepath.Join("testdata", "batch_router.php"), freePorts(t, 1)[0], http.StatusNotFound, "PHP_CLI_SERVER_WORKERS=2")
	ports := freePorts(t, 2)
	b, err := startBridge(bin, "-listen", "127.0.0.1:"+ports[0], "-admin", "127.0.0.1:"+ports[1],
		"-backend", php+"/api/", "-backend-batch-url", php+"/api/batch", "-backend-batch-delay", "5ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.kill()
		if l := b.logs.String(); strings.Contains(l, "WARNING: DATA RACE") || strings.Contains(l, "panic:") {
			t.Errorf("wsbridge logged a race or a panic:\n%s", l)
		} else if t.Failed() {
			t.Logf("wsbridge log:\n%s", l)
		}
	})
	dial := func(id string) *websocket.Conn {
		c, _, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:"+ports[0]+"/"+id, nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		return c
	}
	c := dial("alice")
	defer c.Close()
	exchange := func(typ int, send string) (int, string) {
		t.Helper()
		if err := c.WriteMessage(typ, []byte(send)); err != nil {
			t.Fatal(err)
		}
		gt, got, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		return gt, string(got)
	}
	if _, got := exchange(websocket.TextMessage, "hello\nworld"); got != "alice#2 user=alice room=: hello\nworld" {
		t.Fatalf("text: %q", got)
	}
	bin1 := "\x00a\nb\xff\xfe\r\ntext 3 x\n"
	if typ, got := exchange(websocket.BinaryMessage, bin1); typ != websocket.BinaryMessage || got != reverse(bin1) {
		t.Fatalf("binary: %d %q, want %q", typ, got, reverse(bin1))
	}
	// "quiet" gets no reply: the next frame is join's.
	if err := c.WriteMessage(websocket.TextMessage, []byte("quiet")); err != nil {
		t.Fatal(err)
	}
	if _, got := exchange(websocket.TextMessage, "join"); got != "alice#5 user=alice room=: join" {
		t.Fatalf("join: %q", got)
	}
	if _, got := exchange(websocket.TextMessage, "after"); got != "alice#6 user=alice room=a b&c: after" {
		t.Fatalf("after set_meta: %q", got)
	}

	var wg sync.WaitGroup
	for i := range 5 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("c%d", i)
			cc := dial(id)
			defer cc.Close()
			for j := range 10 {
				_ = cc.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(j)))
			}
			for j := range 10 {
				_, got, err := cc.ReadMessage()
				if want := fmt.Sprintf("%s#%d user=%s room=: %d", id, j+2, id, j); err != nil || string(got) != want {
					t.Errorf("%s: got %q (%v), want %q", id, got, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}
