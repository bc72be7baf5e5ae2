package sign

import (
	"errors"
	"fmt"
	"strings"
)

// Key is one shared HMAC secret and the id a signature names it by.
type Key struct {
	// ID is the keyid parameter of the signature: 1–64 visible ASCII
	// characters, without '"', '\\', ',' or '='.
	ID string
	// Secret is the HMAC-SHA256 key, its bytes exactly as given.
	Secret []byte
}

// ErrBadKey is returned, wrapped with the reason, for a -sign-key value
// that cannot be used.
var ErrBadKey = errors.New("sign: bad -sign-key value")

// maxKeyID bounds a keyid; it is a name, not a secret.
const maxKeyID = 64

// ParseKeys parses the -sign-key flag value,
// "<keyid>=<secret>[,<keyid>=<secret>…]". The first key signs; the others
// are accepted by a Verifier so that keys can rotate. Each entry is split at
// its first '=', so a secret may contain '=' (base64 padding) but not ',';
// the secret's bytes are used as given, nothing is trimmed or decoded.
//
// Errors name the entry by position and never quote a secret.
func ParseKeys(value string) ([]Key, error) {
	if value == "" {
		return nil, fmt.Errorf("%w: empty, want <keyid>=<secret>[,<keyid>=<secret>…]", ErrBadKey)
	}
	entries := strings.Split(value, ",")
	keys := make([]Key, 0, len(entries))
	for i, e := range entries {
		n := i + 1
		if e == "" {
			return nil, fmt.Errorf("%w: entry %d is empty, want <keyid>=<secret>", ErrBadKey, n)
		}
		id, secret, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("%w: entry %d has no '=', want <keyid>=<secret>", ErrBadKey, n)
		}
		if err := checkKeyID(id); err != nil {
			return nil, fmt.Errorf("%w: entry %d: %v", ErrBadKey, n, err)
		}
		if secret == "" {
			return nil, fmt.Errorf("%w: entry %d (keyid %q): empty secret", ErrBadKey, n, id)
		}
		for _, k := range keys {
			if k.ID == id {
				return nil, fmt.Errorf("%w: entry %d: keyid %q given twice", ErrBadKey, n, id)
			}
		}
		keys = append(keys, Key{ID: id, Secret: []byte(secret)})
	}
	return keys, nil
}

// checkKeyID reports why id cannot be a keyid. A keyid travels in a
// structured-field string, so it is kept to characters that need no
// escaping there, and that a simple verifier can match with a pattern.
func checkKeyID(id string) error {
	if id == "" {
		return errors.New("empty keyid")
	}
	if len(id) > maxKeyID {
		return fmt.Errorf("keyid %q is longer than %d bytes", id, maxKeyID)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == ',' || c == '=' {
			return fmt.Errorf("keyid %q: byte %d (%q) is not allowed, want visible ASCII without '\"', '\\\\', ',' or '='", id, i, c)
		}
	}
	return nil
}

// checkKeys validates keys built without ParseKeys.
func checkKeys(keys []Key) error {
	if len(keys) == 0 {
		return fmt.Errorf("%w: no key", ErrBadKey)
	}
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		if err := checkKeyID(k.ID); err != nil {
			return fmt.Errorf("%w: key %d: %v", ErrBadKey, i+1, err)
		}
		if len(k.Secret) == 0 {
			return fmt.Errorf("%w: key %d (keyid %q): empty secret", ErrBadKey, i+1, k.ID)
		}
		if seen[k.ID] {
			return fmt.Errorf("%w: key %d: keyid %q given twice", ErrBadKey, i+1, k.ID)
		}
		seen[k.ID] = true
	}
	return nil
}
