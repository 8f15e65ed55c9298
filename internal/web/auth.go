package web

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"

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

// decoy is compared against when the name is unknown, so that an unknown
// name takes as long to refuse as a wrong password. It is made on first
// use: bcrypt is slow on purpose, and most programs never check anyone.
var decoy = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), bcrypt.DefaultCost)
	return h
})

// Check reports whether pass is name's password.
func (u Users) Check(name, pass string) bool {
	hash, ok := u[name]
	if !ok {
		hash = decoy()
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(pass)) == nil && ok
}
