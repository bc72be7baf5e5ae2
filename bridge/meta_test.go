package bridge

import (
	"fmt"
	"strings"
	"testing"
)

// TestMetaRules: names are header tokens, canonicalised; values are visible
// ASCII, spaces and tabs; an empty value deletes; past 16 names or 1 KiB a
// set is refused and what was stored stays.
func TestMetaRules(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"name", "Name", true},
		{"USER-ID", "User-Id", true},
		{"a_b.c~1", "A_b.c~1", true},
		{"", "", false},
		{"bad name", "", false},
		{"bad:name", "", false},
		{"ümlaut", "", false},
	} {
		got, ok := canonicalMetaName([]byte(c.in))
		if got != c.want || ok != c.ok {
			t.Errorf("canonicalMetaName(%q) = %q, %v; want %q, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	for v, ok := range map[string]bool{"alice": true, "a b\tc": true, "": true, "a\rb": false, "a\x00": false, "caf\xc3\xa9": false, "\x7f": false} {
		if validMetaValue([]byte(v)) != ok {
			t.Errorf("validMetaValue(%q) != %v", v, ok)
		}
	}

	var m meta
	for i := 1; i <= MetaMaxNames; i++ {
		if !m.set(fmt.Sprintf("N%d", i), []byte("v")) {
			t.Fatalf("name %d refused", i)
		}
	}
	if m.set("N17", []byte("v")) {
		t.Fatal("a 17th name was stored")
	}
	if !m.set("N1", []byte("w")) {
		t.Fatal("replacing a value under the bounds was refused")
	}
	if !m.set("N2", nil) || len(m.kv) != MetaMaxNames-1 || len(m.hdrs) != len(m.kv) {
		t.Fatalf("delete: %d names, %d headers", len(m.kv), len(m.hdrs))
	}
	if !m.set("N17", []byte("v")) {
		t.Fatal("a name after a delete was refused")
	}
	before := m.bytes
	if m.set("N1", []byte(strings.Repeat("x", MetaMaxBytes))) || m.bytes != before {
		t.Fatal("a value past 1 KiB in all was stored")
	}
	if m.kv[0].value != "w" || string(m.hdrs[0]) != "Wsbridge-Meta-N1" {
		t.Fatalf("first entry %+v %q", m.kv[0], m.hdrs[0])
	}
	room := MetaMaxBytes - m.bytes + len("w")
	if !m.set("N1", []byte(strings.Repeat("x", room))) || m.bytes != MetaMaxBytes {
		t.Fatalf("a value filling exactly 1 KiB: bytes %d", m.bytes)
	}
}
