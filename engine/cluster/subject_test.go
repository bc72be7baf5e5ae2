package cluster

import (
	"strings"
	"testing"
)

func TestTokenRoundTrip(t *testing.T) {
	for _, id := range []string{"a", "user-1", "a.b", "..x", "~", "~2E", "a.~.b", "A_z-0~9.", strings.Repeat(".", 50)} {
		tok := Token(id)
		if strings.ContainsAny(tok, ".*> \t\r\n") || tok == "" {
			t.Errorf("Token(%q) = %q: not one subject token", id, tok)
		}
		back, ok := ID(tok)
		if !ok || back != id {
			t.Errorf("ID(Token(%q)) = %q, %v", id, back, ok)
		}
	}
	if Token("a.b") == Token("a~2Eb") {
		t.Error("two ids share a token")
	}
	for _, bad := range []string{"", "~", "~2", "~zz", "a~2"} {
		if _, ok := ID(bad); ok {
			t.Errorf("ID(%q) accepted", bad)
		}
	}
	if got := Subject("a.b"); got != "wsb.c.a~2Eb" {
		t.Errorf("Subject = %q", got)
	}
}

func TestTokenPlainIDNoCopy(t *testing.T) {
	id := "plain-id_42"
	if n := testing.AllocsPerRun(100, func() { _ = Token(id) }); n != 0 {
		t.Errorf("Token of a plain id allocates %v times", n)
	}
}

func TestTheirsWins(t *testing.T) {
	if !theirsWins(2, "a", 1, "b") || theirsWins(1, "a", 2, "b") {
		t.Error("the newer stamp must win")
	}
	if theirsWins(1, "a", 1, "b") == theirsWins(1, "b", 1, "a") {
		t.Error("equal stamps: the two nodes must agree")
	}
}
