package allocator

import (
	"crypto/rand"
	"encoding/hex"
)

// NewRequestID returns a random id for one logical store call. Reuse it
// when retrying the same call; make a new one for a new call.
func NewRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails: crypto/rand aborts the program instead
	return hex.EncodeToString(b)
}
