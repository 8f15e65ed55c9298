package web

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Users are the accounts of the authentication file: name to bcrypt hash.
type Users map[string][]byte

// LoadUsers reads an authentication file: one "name:hash" per line, the
// hash from bcrypt (htpasswd -B writes such lines), "#" starting a
// comment line. A bad line is an error naming it.
func LoadUsers(path string) (Users, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--auth-file: %w", err)
	}
	users := Users{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hash, ok := strings.Cut(text, ":")
		if _, err := bcrypt.Cost([]byte(hash)); !ok || name == "" || err != nil {
			return nil, fmt.Errorf("--auth-file %s line %d: want NAME:BCRYPT-HASH (htpasswd -B -n NAME prints one)", path, line)
		}
		users[name] = []byte(hash)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("--auth-file %s: no users: want one NAME:BCRYPT-HASH line per user", path)
	}
	return users, nil
}

// decoys are compared against when the name is unknown, so that an
// unknown name takes as long to refuse as a wrong password: one hash per
// bcrypt cost, made on first use (bcrypt is slow on purpose).
var decoys sync.Map // cost -> func() []byte

func decoy(cost int) []byte {
	f, _ := decoys.LoadOrStore(cost, sync.OnceValue(func() []byte {
		h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), cost)
		return h
	}))
	return f.(func() []byte)()
}

// usualCost is the bcrypt cost most of the users' hashes have (htpasswd
// -B uses 5, Go's bcrypt 10): an unknown name is compared at that cost.
func (u Users) usualCost() int {
	count := map[int]int{}
	best := bcrypt.DefaultCost
	for _, h := range u {
		c, err := bcrypt.Cost(h)
		if err != nil {
			continue
		}
		count[c]++
		if count[c] > count[best] || (count[c] == count[best] && c > best) {
			best = c
		}
	}
	return best
}

// Check reports whether pass is name's password.
func (u Users) Check(name, pass string) bool {
	hash, ok := u[name]
	if !ok {
		hash = decoy(u.usualCost())
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(pass)) == nil && ok
}

// authenticator checks the credentials of each request. A dashboard polls
// with the same credentials every few seconds and bcrypt is slow on
// purpose, so credentials that passed are remembered for passedFor (as an
// HMAC under a key of this process alone, not the password); and at most
// maxChecks comparisons run at once, so that guesses cannot take every
// core from the pages.
type authenticator struct {
	users   Users
	now     func() time.Time
	compare func(name, pass string) bool // Users.Check; tests count calls
	key     []byte
	checks  chan struct{}

	mu     sync.Mutex
	passed map[[sha256.Size]byte]time.Time // until when
}

const (
	passedFor = 5 * time.Minute
	maxPassed = 1024 // remembered credentials; more start the memory afresh
	maxChecks = 2
)

func newAuthenticator(users Users, now func() time.Time) *authenticator {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails: crypto/rand ends the program instead
	return &authenticator{users: users, now: now, compare: users.Check, key: key,
		checks: make(chan struct{}, maxChecks), passed: map[[sha256.Size]byte]time.Time{}}
}

// check reports whether name and pass are a user's; false as well when ctx
// ends while the check waits its turn.
func (a *authenticator) check(ctx context.Context, name, pass string) bool {
	mac := hmac.New(sha256.New, a.key)
	mac.Write([]byte(name))
	mac.Write([]byte{0})
	mac.Write([]byte(pass))
	var sum [sha256.Size]byte
	copy(sum[:], mac.Sum(nil))
	a.mu.Lock()
	until, ok := a.passed[sum]
	a.mu.Unlock()
	if ok && a.now().Before(until) {
		return true
	}
	select {
	case a.checks <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	good := a.compare(name, pass)
	<-a.checks
	if good {
		a.mu.Lock()
		if len(a.passed) >= maxPassed {
			clear(a.passed)
		}
		a.passed[sum] = a.now().Add(passedFor)
		a.mu.Unlock()
	}
	return good
}
