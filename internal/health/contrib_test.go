package health

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/testreq"
)

// contribEvent is what the exec step writes to the command's stdin, for a
// user whose process name tries its luck with a shell.
func contribEvent(t *testing.T, user string) []byte {
	t.Helper()
	at := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	b, err := json.Marshal(execEvent{Message: "GPU 1 used by " + user + " (pid 4242) without reservation",
		Violation: allocator.ViolationRecord{Node: "gpu01", Kind: "unreserved", User: user, Index: 1, FirstSeen: at, LastSeen: at,
			Processes: []allocator.ViolationProcess{{PID: 4242, Name: "$(touch /tmp/pwned)"}}}})
	require.NoError(t, err)
	return b
}

// standIn writes a program that records its arguments and stdin.
func standIn(t *testing.T, dir, name string) {
	t.Helper()
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + dir + "/" + name + ".args\ncat > " + dir + "/" + name + ".in\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755))
}

func runContrib(t *testing.T, script string, env []string, in []byte) {
	t.Helper()
	cmd := exec.Command(filepath.Join("..", "..", "contrib", "violations", script))
	cmd.Env, cmd.Stdin = env, bytes.NewReader(in)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// TestContribMail: the mail example mails the user and the admins; a user
// name that is not a plain account name is not a recipient.
func TestContribMail(t *testing.T) {
	testreq.Need(t, testreq.Python3)
	dir := t.TempDir()
	standIn(t, dir, "sendmail")
	env := []string{"PATH=" + dir + ":/usr/bin:/bin", "CANHAZGPU_MAIL_ADMINS=gpu-admins"}
	runContrib(t, "mail.sh", env, contribEvent(t, "bob"))
	args, err := os.ReadFile(filepath.Join(dir, "sendmail.args"))
	require.NoError(t, err)
	require.Equal(t, "--\nbob\ngpu-admins\n", string(args))
	body, err := os.ReadFile(filepath.Join(dir, "sendmail.in"))
	require.NoError(t, err)
	require.Contains(t, string(body), "Subject: canhazgpu: GPU use against the rules on gpu01\n")
	require.Contains(t, string(body), "GPU 1 used by bob (pid 4242) without reservation")

	runContrib(t, "mail.sh", env, contribEvent(t, "-oQ/tmp/x bob"))
	args, err = os.ReadFile(filepath.Join(dir, "sendmail.args"))
	require.NoError(t, err)
	require.Equal(t, "--\ngpu-admins\n", string(args))
}

// TestContribWebhook: the webhook example posts {"text": ...}, built by a
// JSON encoder, to the URL in its file.
func TestContribWebhook(t *testing.T) {
	testreq.Need(t, testreq.Python3)
	dir := t.TempDir()
	standIn(t, dir, "curl")
	urlFile := filepath.Join(dir, "url")
	require.NoError(t, os.WriteFile(urlFile, []byte("https://chat.example/hooks/xyz\n"), 0o600))
	env := []string{"PATH=" + dir + ":/usr/bin:/bin", "CANHAZGPU_WEBHOOK_URL_FILE=" + urlFile}
	runContrib(t, "webhook.sh", env, contribEvent(t, `bob"; rm -rf /`))
	args, err := os.ReadFile(filepath.Join(dir, "curl.args"))
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(string(args), "--data-binary\n@-\nhttps://chat.example/hooks/xyz\n"), string(args))
	var post struct{ Text string }
	in, err := os.ReadFile(filepath.Join(dir, "curl.in"))
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(in, &post))
	require.Equal(t, `canhazgpu on gpu01: GPU 1 used by bob"; rm -rf / (pid 4242) without reservation`, post.Text)
}
