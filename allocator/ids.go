package allocator

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
)

// NewRequestID returns a random id for one logical store call. Reuse it
// when retrying the same call; make a new one for a new call.
func NewRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
	return hex.EncodeToString(b)
}

// MaxIDLen bounds request and queue entry ids.
const MaxIDLen = 256

// ValidateID checks a request or queue entry id. A request id becomes part
// of a key name, so ids are limited to characters that can neither close
// the node's hash tag nor make the name match another key's ACL pattern:
// letters, digits, '.', '_', '-', ':' and the brackets of PBS array job
// ids (ACL patterns, not key names, give brackets a meaning).
func ValidateID(field, id string) error {
	accepted := fmt.Sprintf("1-%d letters, digits, '.', '_', '-', ':', '[' or ']'", MaxIDLen)
	if id == "" {
		return &InputError{Field: field, Value: id, Accepted: accepted}
	}
	if len(id) > MaxIDLen {
		return &InputError{Field: field, Value: id[:40] + "…", Accepted: accepted}
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == ':' || c == '[' || c == ']'
		if !ok {
			return &InputError{Field: field, Value: id, Accepted: accepted}
		}
	}
	return nil
}
