package examples_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/wsbridge/wsbridge/bridge/sign"
	"github.com/wsbridge/wsbridge/protocol"
)

// startVerifier serves examples/testdata/verify_router.php, which runs
// examples/php/verify_signature.php on every request, on a free loopback
// port with env added, and waits until it answers.
func startVerifier(t *testing.T, env ...string) string {
	t.Helper()
	// An unsigned GET / is refused: the verifier is up.
	return servePHP(t, filepath.Join("testdata", "verify_router.php"), freePorts(t, 1)[0], http.StatusUnauthorized, env...)
}

// signedCall is one backend call as the bridge would send it.
type signedCall struct {
	method, path, query, body string
	connID                    string
	seq                       uint64
	created                   int64
}

// send signs c with s and sends it to base, after tamper (if any) has
// changed the request; it returns the status and the body of the answer.
func (c signedCall) send(t *testing.T, s *sign.Signer, base string, tamper func(*http.Request)) (int, string) {
	t.Helper()
	m := sign.Message{Method: c.method, Path: []byte(c.path), Query: []byte(c.query), Body: []byte(c.body),
		ConnectionID: []byte(c.connID), Seq: c.seq, Created: c.created}
	_, sig := s.Append(nil, &m)
	u := base + c.path
	if c.query != "" {
		u += "?" + c.query
	}
	req, err := http.NewRequest(c.method, u, strings.NewReader(c.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(protocol.HeaderConnectionID, c.connID)
	req.Header.Set(sign.HeaderSeq, string(sig.Seq))
	req.Header.Set(sign.HeaderContentDigest, string(sig.ContentDigest))
	req.Header.Set(sign.HeaderSignatureInput, string(sig.SignatureInput))
	req.Header.Set(sign.HeaderSignature, string(sig.Signature))
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	if tamper != nil {
		tamper(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", c.method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPHPVerifySignature runs examples/php/verify_signature.php in real
// php on calls signed by the Go Signer: the valid ones are accepted with
// the connection id, seq and keyid they carry, and each tampered or
// wrongly signed one is refused.
func TestPHPVerifySignature(t *testing.T) {
	needTools(t, "php")
	// The backend knows both keys; the bridge signs with the newer one.
	php := startVerifier(t, "WSBRIDGE_SIGN_KEY=k2025=old secret,k2026=bmV3IHNlY3JldA==", "SIGN_MAX_AGE=300", "PHP_CLI_SERVER_WORKERS=2")
	signer, err := sign.ParseSigner("k2026=bmV3IHNlY3JldA==,k2025=old secret")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	binary := make([]byte, 256)
	for i := range binary {
		binary[i] = byte(i)
	}
	valid := []signedCall{
		{"GET", "/alice", "token=a%20b&x=1", "", "5be1c0a2f3d4-1a", 1, now},
		{"GET", "/alice", "", "", "5be1c0a2f3d4-1b", 1, now},
		{"POST", "/alice", "", `{"text":"hi there"}`, "5be1c0a2f3d4-1a", 2, now},
		{"POST", "/alice", "", string(binary), "5be1c0a2f3d4-1a", 3, now},
		{"POST", "/alice", "", strings.Repeat("0123456789abcdef", 4096), "5be1c0a2f3d4-1a", 4, now},
		{"DELETE", "/alice", "", "going away", "5be1c0a2f3d4-1a", 5, now - 200},
	}
	for _, c := range valid {
		st, body := c.send(t, signer, php, nil)
		if st != 200 {
			t.Fatalf("%s %s?%s (%d B body, seq %d): got %d %q, want 200", c.method, c.path, c.query, len(c.body), c.seq, st, body)
		}
		var got struct {
			KeyID        string `json:"keyid"`
			ConnectionID string `json:"connection_id"`
			Seq          uint64 `json:"seq"`
			Created      int64  `json:"created"`
		}
		if err := json.Unmarshal([]byte(body), &got); err != nil {
			t.Fatalf("%s %s: answer %q: %v", c.method, c.path, body, err)
		}
		want := fmt.Sprint("k2026 ", c.connID, " ", c.seq, " ", c.created)
		requireEqual(t, c.method+" "+c.path+" verified", fmt.Sprint(got.KeyID, " ", got.ConnectionID, " ", got.Seq, " ", got.Created), want)
	}

	// Rotation: a call still signed with the old key is accepted too.
	oldSigner, err := sign.ParseSigner("k2025=old secret")
	if err != nil {
		t.Fatal(err)
	}
	post := signedCall{"POST", "/alice", "", `{"text":"hi"}`, "5be1c0a2f3d4-1a", 7, now}
	st, body := post.send(t, oldSigner, php, nil)
	if st != 200 || !strings.Contains(body, `"keyid":"k2025"`) {
		t.Fatalf("POST signed with the old key: got %d %q, want 200 with keyid k2025", st, body)
	}

	wrongKey, err := sign.ParseSigner("k2026=guessed")
	if err != nil {
		t.Fatal(err)
	}
	unknownKey, err := sign.ParseSigner("k2027=bmV3IHNlY3JldA==")
	if err != nil {
		t.Fatal(err)
	}
	get := signedCall{"GET", "/alice", "token=letmein", "", "5be1c0a2f3d4-1a", 1, now}
	for _, c := range []struct {
		name   string
		call   signedCall
		signer *sign.Signer
		tamper func(*http.Request)
		reason string
	}{
		{"body tampered", post, signer, func(r *http.Request) {
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(`{"text":"ho"}`)), 13
		}, "Content-Digest does not match the body"},
		{"body and Content-Digest tampered", post, signer, func(r *http.Request) {
			r.Body, r.ContentLength = io.NopCloser(strings.NewReader(`{"text":"ho"}`)), 13
			r.Header.Set(sign.HeaderContentDigest, string(sign.AppendDigest(nil, []byte(`{"text":"ho"}`))))
		}, "signature does not match"},
		{"seq changed", post, signer, func(r *http.Request) { r.Header.Set(sign.HeaderSeq, "8") }, "signature does not match"},
		{"connection id changed", post, signer, func(r *http.Request) {
			r.Header.Set(protocol.HeaderConnectionID, "5be1c0a2f3d4-1b")
		}, "signature does not match"},
		{"method changed", post, signer, func(r *http.Request) { r.Method = "DELETE" }, "signature does not match"},
		{"path changed", post, signer, func(r *http.Request) { r.URL.Path = "/bob" }, "signature does not match"},
		{"query changed", get, signer, func(r *http.Request) { r.URL.RawQuery = "token=letmeout" }, "signature does not match"},
		{"query added", post, signer, func(r *http.Request) { r.URL.RawQuery = "x=1" }, "signature does not match"},
		{"wrong key", post, wrongKey, nil, "signature does not match"},
		{"unknown keyid", post, unknownKey, nil, "unknown keyid"},
		{"too old", signedCall{"POST", "/alice", "", "hi", "5be1c0a2f3d4-1a", 9, now - 400}, signer, nil,
			"created is more than max age from now"},
		{"from the future", signedCall{"POST", "/alice", "", "hi", "5be1c0a2f3d4-1a", 9, now + 400}, signer, nil,
			"created is more than max age from now"},
		{"seq not covered", post, signer, func(r *http.Request) {
			r.Header.Set(sign.HeaderSignatureInput, strings.Replace(r.Header.Get(sign.HeaderSignatureInput), ` "wsbridge-seq"`, "", 1))
		}, "required components not covered"},
		{"unsigned", post, signer, func(r *http.Request) {
			r.Header.Del(sign.HeaderSignature)
			r.Header.Del(sign.HeaderSignatureInput)
		}, "no wsbridge Signature-Input"},
	} {
		st, body := c.call.send(t, c.signer, php, c.tamper)
		if st != http.StatusUnauthorized || body != c.reason+"\n" {
			t.Errorf("%s: got %d %q, want 401 %q", c.name, st, body, c.reason)
		}
	}
}

// phpCall is one call as examples/testdata/bridge_verify_router.php
// verified and logged it.
type phpCall struct {
	Method       string `json:"method"`
	URI          string `json:"uri"`
	KeyID        string `json:"keyid"`
	ConnectionID string `json:"connection_id"`
	Seq          uint64 `json:"seq"`
}

// TestPHPVerifiesBridge: the wsbridge binary with -sign-key against a PHP
// backend that verifies every call with examples/php/verify_signature.php:
// the GET (with a query), each POST and the DELETE verify, signed with the
// first key, numbered 1, 2, 3, … in order.
func TestPHPVerifiesBridge(t *testing.T) {
	needTools(t, "php")
	bin := buildBridge(t)
	logPath := filepath.Join(t.TempDir(), "calls.jsonl")
	php := servePHP(t, filepath.Join("testdata", "bridge_verify_router.php"), freePorts(t, 1)[0], http.StatusUnauthorized,
		"WSBRIDGE_SIGN_KEY=k2025=old secret,k2026=bmV3IHNlY3JldA==", "SIGN_MAX_AGE=300", "SIGN_LOG="+logPath, "PHP_CLI_SERVER_WORKERS=2")
	ports := freePorts(t, 2)
	b, err := startBridge(bin, "-listen", "127.0.0.1:"+ports[0], "-admin", "127.0.0.1:"+ports[1],
		"-backend", php+"/api/", "-sign-key", "k2026=bmV3IHNlY3JldA==,k2025=old secret")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.kill()
		if l := b.logs.String(); strings.Contains(l, "WARNING: DATA RACE") || strings.Contains(l, "panic:") || strings.Contains(l, "bmV3IHNlY3JldA") {
			t.Errorf("wsbridge logged a race, a panic or the secret:\n%s", l)
		} else if t.Failed() {
			t.Logf("wsbridge log:\n%s", l)
		}
	})
	c, _, err := websocket.DefaultDialer.Dial("ws://127.0.0.1:"+ports[0]+"/alice?room=a%20b", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range 3 {
		if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("message %d", i))); err != nil {
			t.Fatal(err)
		}
		_, reply, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		var got phpCall
		if err := json.Unmarshal(reply, &got); err != nil {
			t.Fatalf("reply %d %q: %v", i, reply, err)
		}
		if got.Method != "POST" || got.Seq != uint64(i+2) || got.KeyID != "k2026" {
			t.Fatalf("POST %d: verified %+v, want seq %d signed with k2026", i, got, i+2)
		}
	}
	_ = c.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(1000, "bye"))
	var calls []phpCall
	waitFor(t, 20*time.Second, func() error {
		data, err := os.ReadFile(logPath)
		if err != nil {
			return err
		}
		calls = calls[:0]
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var c phpCall
			if err := json.Unmarshal([]byte(line), &c); err != nil {
				return fmt.Errorf("%q: %v", line, err)
			}
			calls = append(calls, c)
		}
		if len(calls) < 5 {
			return fmt.Errorf("%d calls logged, want 5", len(calls))
		}
		return nil
	})
	for i, want := range []string{"GET", "POST", "POST", "POST", "DELETE"} {
		c := calls[i]
		if c.Method != want || c.Seq != uint64(i+1) || c.KeyID != "k2026" || c.ConnectionID != calls[0].ConnectionID {
			t.Fatalf("call %d: %+v, want %s seq %d signed with k2026 on connection %s", i, c, want, i+1, calls[0].ConnectionID)
		}
	}
	requireEqual(t, "GET target", calls[0].URI, "/api/alice?room=a%20b")
}
