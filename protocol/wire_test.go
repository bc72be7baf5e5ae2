package protocol_test

import (
	"testing"

	"github.com/wsbridge/wsbridge/protocol"
)

func TestIsBinaryContentType(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		want bool
	}{
		{"application/octet-stream", true},
		{"Application/Octet-Stream; charset=x", true},
		{"APPLICATION/OCTET-STREAM", true},
		{" application/octet-stream ;x=y", true},
		{"application/octet-stream\t", true},
		{"application/octet-stream;", true},
		{"", false},
		{"text/plain", false},
		{"application/octet-streamy", false},
		{"application/octet-stream-x; charset=x", false},
		{"application/octet", false},
		{"x application/octet-stream", false},
		{";application/octet-stream", false},
	} {
		if got := protocol.IsBinaryContentType([]byte(tc.ct)); got != tc.want {
			t.Errorf("IsBinaryContentType(%q) = %v, want %v", tc.ct, got, tc.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		protocol.IsBinaryContentType([]byte("Application/Octet-Stream; charset=x"))
	}); n != 0 {
		t.Errorf("IsBinaryContentType allocates %v times, want 0", n)
	}
}

func TestValidChannel(t *testing.T) {
	long := make([]byte, protocol.MaxChannelLen)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"room", true},
		{"room:42", true},
		{"A-z_0.9~:", true},
		{":", true},
		{"..", true}, // not a path: channels are never part of a backend URL
		{string(long), true},
		{string(long) + "a", false},
		{"", false},
		{"room 1", false},
		{"room/1", false},
		{"room%20", false},
		{"räum", false},
		{"a,b", false},
	} {
		if got := protocol.ValidChannel([]byte(tc.name)); got != tc.want {
			t.Errorf("ValidChannel(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestNextChannel(t *testing.T) {
	for _, tc := range []struct {
		list string
		want []string
	}{
		{"a", []string{"a"}},
		{"a, b ,c", []string{"a", "b", "c"}},
		{" a ,, b", []string{"a", "", "b"}},
		{"a,", []string{"a", ""}},
		{"", []string{""}},
	} {
		var got []string
		for rest := []byte(tc.list); rest != nil; {
			var name []byte
			name, rest = protocol.NextChannel(rest)
			got = append(got, string(name))
		}
		if len(got) != len(tc.want) {
			t.Errorf("NextChannel over %q: got %q, want %q", tc.list, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("NextChannel over %q: got %q, want %q", tc.list, got, tc.want)
				break
			}
		}
	}
	list := []byte("room:1, room:2")
	if n := testing.AllocsPerRun(100, func() {
		for rest := list; rest != nil; {
			var name []byte
			name, rest = protocol.NextChannel(rest)
			protocol.ValidChannel(name)
		}
	}); n != 0 {
		t.Errorf("NextChannel allocates %v times, want 0", n)
	}
}
