package cluster

import "strings"

// subjectPrefix starts the subject of every ClientId: wsb.c.<token>.
const subjectPrefix = "wsb.c."

// Token encodes a ClientId as one NATS subject token. A ClientId is made
// of A–Z a–z 0–9 . _ ~ - (protocol.ValidClientID); '.' separates subject
// tokens, so it is written ~2E and '~', the escape, ~7E. Every other byte
// stands for itself, so the common id costs no copy.
func Token(id string) string {
	if !strings.ContainsAny(id, ".~") {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) + 8)
	for i := 0; i < len(id); i++ {
		switch id[i] {
		case '.':
			b.WriteString("~2E")
		case '~':
			b.WriteString("~7E")
		default:
			b.WriteByte(id[i])
		}
	}
	return b.String()
}

// ID decodes a Token; ok is false for a token Token never makes.
func ID(tok string) (id string, ok bool) {
	if !strings.Contains(tok, "~") {
		return tok, tok != ""
	}
	var b strings.Builder
	b.Grow(len(tok))
	for i := 0; i < len(tok); i++ {
		if tok[i] != '~' {
			b.WriteByte(tok[i])
			continue
		}
		if i+2 >= len(tok) {
			return "", false
		}
		switch tok[i+1 : i+3] {
		case "2E":
			b.WriteByte('.')
		case "7E":
			b.WriteByte('~')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

// Subject is the subject a node holding id answers on.
func Subject(id string) string { return subjectPrefix + Token(id) }
