package callerenv

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	block := []byte("PATH=/usr/bin\x00LD_LIBRARY_PATH=/opt/cuda/lib64\x00EMPTY=\x00A=b=c\x00NOEQUALS\x00\x00")
	got := parse(block)
	want := []string{"PATH=/usr/bin", "LD_LIBRARY_PATH=/opt/cuda/lib64", "EMPTY=", "A=b=c", "NOEQUALS"}
	if !slices.Equal(got, want) {
		t.Fatalf("parse = %q, want %q", got, want)
	}
	if got := parse(nil); got == nil || len(got) != 0 {
		t.Fatalf("parse(nil) = %#v, want an empty, non-nil list", got)
	}
}

func TestEnvRange(t *testing.T) {
	// A real line of Linux 6.1, its command name made awkward: spaces and
	// parentheses are allowed there.
	line := "4242 (a) (b c)) S 1 4242 4242 0 -1 4194560 98 0 0 0 0 0 0 0 20 0 1 0 3006 2457600 246 " +
		"18446744073709551615 94598540959744 94598541003233 140724391583104 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 " +
		"94598541021552 94598541023080 94598547337216 140724391587525 140724391587546 140724391587546 140724391591915 0\n"
	start, end, err := envRange(line)
	if err != nil || start != 140724391587546 || end != 140724391591915 {
		t.Fatalf("envRange = %d, %d, %v; want 140724391587546, 140724391591915, nil", start, end, err)
	}
	for _, bad := range []string{
		"",
		"4242 (a) S 1",
		strings.Replace(line, "140724391591915", "x", 1),
		strings.Replace(line, "140724391591915", "5", 1), // ends before it starts
	} {
		if _, _, err := envRange(bad); err == nil {
			t.Errorf("envRange(%.40q...) accepted a bad line", bad)
		}
	}
}

// TestEnvironReadsTheStartingEnvironment reads this process's own block
// the secure way. A child process started with a known environment,
// changed after start, shows that what comes back is what execve gave,
// not the current one.
func TestEnvironReadsTheStartingEnvironment(t *testing.T) {
	if os.Getenv("CALLERENV_CHILD") == "1" {
		os.Setenv("LATER", "set after start")
		os.Unsetenv("LD_LIBRARY_PATH")
		env, err := Environ(true)
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.WriteString(strings.Join(env, "\n") + "\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvironReadsTheStartingEnvironment$")
	cmd.Env = []string{"CALLERENV_CHILD=1", "LD_LIBRARY_PATH=/opt/x", "TMPDIR=/tmp/y"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	lines := strings.Split(string(out), "\n")
	for _, want := range cmd.Env {
		if !slices.Contains(lines, want) {
			t.Errorf("Environ(true) lacks %q; got %q", want, lines)
		}
	}
	if slices.Contains(lines, "LATER=set after start") {
		t.Errorf("Environ(true) shows a variable set after start: %q", lines)
	}
}

func TestEnvironNotSecureIsOSEnviron(t *testing.T) {
	env, err := Environ(false)
	if err != nil || !slices.Equal(env, os.Environ()) {
		t.Fatalf("Environ(false) = %q, %v; want os.Environ()", env, err)
	}
}
