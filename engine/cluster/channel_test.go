package cluster

import "testing"

// TestChannelSubject: every channel name is one subject token after the
// prefix ('.' escaped, ':' kept) and distinct names give distinct subjects.
func TestChannelSubject(t *testing.T) {
	for ch, want := range map[string]string{
		"room":       "wsb.ch.room",
		"a.b":        "wsb.ch.a~2Eb",
		"a~2Eb":      "wsb.ch.a~7E2Eb",
		"user:42":    "wsb.ch.user:42",
		"x:1.y~z-_A": "wsb.ch.x:1~2Ey~7Ez-_A",
	} {
		if got := ChannelSubject(ch); got != want {
			t.Errorf("ChannelSubject(%q) = %q, want %q", ch, got, want)
		}
		if got := PresenceSubject(ch); got != "wsb.chp."+want[len("wsb.ch."):] {
			t.Errorf("PresenceSubject(%q) = %q", ch, got)
		}
	}
}

func TestMergeIDs(t *testing.T) {
	got := mergeIDs([]string{"c", "a", "b", "a"}, 2)
	if len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Fatalf("mergeIDs: %v", got)
	}
	if got := mergeIDs(nil, 5); got == nil || len(got) != 0 {
		t.Fatalf("mergeIDs(nil): %#v", got)
	}
}
