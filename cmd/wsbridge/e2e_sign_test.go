package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/protocol"
)

// signedCall is one call as the signing backend saw it.
type signedCall struct {
	method, keyID, query string
	seq                  uint64
	signed               bool // carried Signature
}

// signingBackend is a net/http backend that verifies every call with a
// sign.Verifier and records it by connection id. It answers a GET "ok",
// echoes a POST, and answers the first DELETE of a ClientId starting with
// "retry" with 500 (so the bridge tries it again).
type signingBackend struct {
	url    string
	verify *sign.Verifier

	mu      sync.Mutex
	calls   map[string][]signedCall // by Wsbridge-Connection-Id
	ids     map[string]string       // ClientId → connection id
	bad     []string                // verification failures
	refused map[string]bool         // ClientIds whose DELETE was refused once
}

func newSigningBackend(t *testing.T, keys string) *signingBackend {
	t.Helper()
	v, err := sign.ParseVerifier(keys, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sb := &signingBackend{verify: v, calls: map[string][]signedCall{}, ids: map[string]string{}, refused: map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: sb}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	sb.url = "http://" + ln.Addr().String() + "/api/"
	return sb
}

func (sb *signingBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	clientID := strings.TrimPrefix(r.URL.Path, "/api/")
	connID := r.Header.Get(protocol.HeaderConnectionID)
	c := signedCall{method: r.Method, query: r.URL.RawQuery, signed: r.Header.Get(sign.HeaderSignature) != ""}
	var verr error
	if c.signed || r.Header.Get(sign.HeaderSeq) != "" {
		var v sign.Verified
		v, verr = sb.verify.Verify(r, body)
		c.keyID, c.seq = v.KeyID, v.Seq
		if verr == nil && v.ConnectionID != connID {
			verr = fmt.Errorf("verified connection id %q, header %q", v.ConnectionID, connID)
		}
	}
	sb.mu.Lock()
	if verr != nil {
		sb.bad = append(sb.bad, fmt.Sprintf("%s %s: %v", r.Method, r.URL, verr))
	}
	sb.calls[connID] = append(sb.calls[connID], c)
	sb.ids[clientID] = connID
	refuse := r.Method == http.MethodDelete && strings.HasPrefix(clientID, "retry") && !sb.refused[clientID]
	if refuse {
		sb.refused[clientID] = true
	}
	sb.mu.Unlock()
	switch r.Method {
	case http.MethodGet:
		_, _ = io.WriteString(w, "ok")
	case http.MethodPost:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(body)
	case http.MethodDelete:
		if refuse {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}
}

// of returns the calls of ClientId id.
func (sb *signingBackend) of(id string) []signedCall {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return slices.Clone(sb.calls[sb.ids[id]])
}

func (sb *signingBackend) failures() []string {
	sb.mu.Lock()
	defer sb.mu.Unlock()
	return slices.Clone(sb.bad)
}

// signedSession opens id (upgrade target id+query), sends n messages
// back to back, reads the n echoes, closes with 1000 and waits until the
// backend has seen want DELETEs of it.
func signedSession(t *testing.T, sb *signingBackend, p *proc, id, query string, n, wantDeletes int) {
	t.Helper()
	target := id
	if query != "" {
		target += "?" + query
	}
	r := rawUpgrade(t, p.ws, target)
	for i := range n {
		r.frame(ws.OpText, true, []byte(fmt.Sprintf("%s message %d", id, i)))
	}
	for i := range n {
		h, payload, err := r.readFrame()
		if err != nil {
			t.Fatalf("%s: reply %d: %v", id, i, err)
		}
		if want := fmt.Sprintf("%s message %d", id, i); h.OpCode != ws.OpText || string(payload) != want {
			t.Fatalf("%s: reply %d: got %v %q, want %q", id, i, h.OpCode, payload, want)
		}
	}
	r.frame(ws.OpClose, true, ws.NewCloseFrameBody(1000, "bye"))
	waitFor(t, 20*time.Second, func() error {
		got := 0
		for _, c := range sb.of(id) {
			if c.method == http.MethodDelete {
				got++
			}
		}
		if got != wantDeletes {
			return fmt.Errorf("%s: %d DELETEs, want %d", id, got, wantDeletes)
		}
		return nil
	})
}

// checkSeqs checks that id's calls were the GET, n POSTs and the DELETE
// (sent deletes times), numbered 1, 2, … with no gap, all signed with
// keyID and carrying query on the GET.
func checkSeqs(t *testing.T, sb *signingBackend, id, query, keyID string, n, deletes int) {
	t.Helper()
	calls := sb.of(id)
	if len(calls) != 1+n+deletes {
		t.Fatalf("%s: %d calls, want %d: %+v", id, len(calls), 1+n+deletes, calls)
	}
	for i, c := range calls {
		method, seq := http.MethodPost, uint64(i+1)
		switch {
		case i == 0:
			method = http.MethodGet
		case i > n:
			method, seq = http.MethodDelete, uint64(n+2) // a retried DELETE keeps its seq
		}
		if c.method != method || c.seq != seq || !c.signed || c.keyID != keyID {
			t.Fatalf("%s: call %d: got %+v, want %s seq %d signed with %q", id, i, c, method, seq, keyID)
		}
		if i == 0 && c.query != query {
			t.Fatalf("%s: GET query %q, want %q", id, c.query, query)
		}
	}
}

// TestSignedCalls: with -sign-key every GET, POST and DELETE of a
// connection verifies with sign.Verifier (method, path, query, body digest,
// connection id, seq) and the seqs run 1, 2, 3, … per connection without a
// gap, the GET first and the DELETE last, a retried DELETE signed again
// with its seq; the bridge signs with the first key, so a rotation works;
// without -sign-key the calls carry no signature and no Wsbridge-Seq.
func TestSignedCalls(t *testing.T) {
	const k1, k2 = "k1=first-secret-0123456789", "k2=second-secret-9876543210"
	sb := newSigningBackend(t, k1+","+k2) // the backend knows both keys

	t.Run("signed with k1", func(t *testing.T) {
		p := startBridge(t, sb.url, "-sign-key", k1+","+k2)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				query := ""
				if i == 0 {
					query = "room=a%20b&x=1"
				}
				signedSession(t, sb, p, fmt.Sprintf("sig-%d", i), query, 3+i, 1)
			}()
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		for i := range 4 {
			query := ""
			if i == 0 {
				query = "room=a%20b&x=1"
			}
			checkSeqs(t, sb, fmt.Sprintf("sig-%d", i), query, "k1", 3+i, 1)
		}
		// The first DELETE is refused with 500: tried again, signed again.
		signedSession(t, sb, p, "retry-1", "", 2, 2)
		checkSeqs(t, sb, "retry-1", "", "k1", 2, 2)
		if strings.Contains(p.Logs(), "first-secret") {
			t.Fatal("the log holds the secret")
		}
	})
	t.Run("rotated to k2", func(t *testing.T) {
		p := startBridge(t, sb.url, "-sign-key", k2+","+k1)
		signedSession(t, sb, p, "rot", "", 2, 1)
		checkSeqs(t, sb, "rot", "", "k2", 2, 1)
	})
	t.Run("unsigned without -sign-key", func(t *testing.T) {
		p := startBridge(t, sb.url)
		signedSession(t, sb, p, "plain", "", 2, 1)
		for _, c := range sb.of("plain") {
			if c.signed || c.seq != 0 {
				t.Fatalf("unsigned bridge: got %+v", c)
			}
		}
	})
	if bad := sb.failures(); len(bad) > 0 {
		t.Fatalf("%d calls failed verification, first: %s", len(bad), bad[0])
	}
}

// TestSignKeyRefused: a bad -sign-key value stops the binary at start with
// exit status 2 and an error that names the flag and not the secret.
func TestSignKeyRefused(t *testing.T) {
	for _, value := range []string{
		"k1",                                // no '='
		"k1=hunter2-secret,k1=hunter2-more", // keyid twice
		"k1=hunter2-secret,=hunter2-nokey",  // empty keyid
		"k\"1=hunter2-secret",               // keyid with a quote
		"k1=hunter2-secret,k2=",             // empty secret
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, binPath, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0",
			"-backend", "http://127.0.0.1:1/", "-sign-key", value)
		out, err := cmd.CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Fatalf("-sign-key %q: got %v (%s), want exit status 2", value, err, out)
		}
		msg := string(out)
		if !strings.Contains(msg, "-sign-key: sign: bad -sign-key value") || strings.Contains(msg, "hunter2") {
			t.Fatalf("-sign-key %q: error %q should say the value is bad and not hold the secret", value, msg)
		}
	}
}
