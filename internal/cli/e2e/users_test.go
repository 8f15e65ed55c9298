package e2e

import (
	"context"
	"errors"
	"os/exec"
	"os/user"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/accounttest"
)

// Two real accounts of this machine, created by the test when missing.
const (
	userA = "chg-alice"
	userB = "chg-bob"
	userC = "chg-carol" // member of adminGroup
	// adminGroup is admin.group in the tests that configure it.
	adminGroup = "chg-admins"
)

// startAs starts canhazgpu directly under the account's uid and groups,
// without runuser in between, so that a signal reaches canhazgpu itself.
func (n *node) startAs(t *testing.T, account string, args ...string) *exec.Cmd {
	t.Helper()
	u, err := user.Lookup(account)
	require.NoError(t, err)
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	cmd := exec.Command(n.userBinary(), args...)
	cmd.Env, cmd.Dir = n.userEnviron(), n.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

func TestAccountsCannotReleaseOrRenewEachOthersReservations(t *testing.T) {
	accounttest.Ensure(t, userA)
	accounttest.Ensure(t, userB)
	n := newNode(t, idleGPUs(3), `run.heartbeat_interval = "200ms"`, `run.heartbeat_timeout = "3s"`,
		// The identity is the uid of the process: $USER changes nothing.
		"USER="+userB, "LOGNAME="+userB)
	ctx := context.Background()

	r := n.runAs(userA, "reserve", "--gpu-ids", "0", "--duration", "1h")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, map[int]string{0: userA}, n.reservations())
	snap, err := n.store().Snapshot(ctx)
	require.NoError(t, err)
	g0, _ := snap.GPUByIndex(0)
	expires := snap.Reservations[g0.UUID].ExpiresAt

	r = n.runAs(userB, "release", "--gpu-ids", "0")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: GPU 0 is reserved by chg-alice (manual), not by chg-bob: only the owner, root or the admin group may release it",
		oneErrorLine(t, r))
	r = n.runAs(userB, "release")
	require.Equal(t, 0, r.code)
	require.Equal(t, "No manual reservations of chg-bob to release on node "+n.name+".\n", r.stdout)
	r = n.runAs(userB, "release", "--user", userA)
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: --user chg-alice: only root may (no admin.group is configured) act for another user; you are chg-bob", oneErrorLine(t, r))
	// Asking for alice's GPU neither takes it nor extends it.
	r = n.runAs(userB, "reserve", "--gpu-ids", "0", "--duration", "8h")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: Not enough GPUs available. Requested: 1, Available: 0: GPU 0 is reserved by chg-alice (manual)", oneErrorLine(t, r))
	r = n.runAs(userB, "admin", "--release", "--gpu-ids", "0")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: canhazgpu admin: only root may (no admin.group is configured); you are chg-bob", oneErrorLine(t, r))

	// alice's run lease on GPU 1: bob can neither renew it (not even with
	// its token) nor run on it nor release it.
	run := n.startAs(t, userA, "run", "--gpu-ids", "1", "--", "sleep", "30")
	require.Eventually(t, func() bool { return n.reservations()[1] == userA }, 5*time.Second, 20*time.Millisecond)
	snap, err = n.store().Snapshot(ctx)
	require.NoError(t, err)
	g1, _ := snap.GPUByIndex(1)
	lease := snap.Reservations[g1.UUID]
	require.Equal(t, allocator.KindRun, lease.Kind)
	_, err = n.store().Renew(ctx, userB, lease.Token, []string{g1.UUID}, time.Hour)
	var lost *allocator.LeaseLostError
	require.True(t, errors.As(err, &lost), "renewing someone else's lease: %v", err)
	require.Equal(t, userA, lost.Holder.User)
	r = n.runAs(userB, "run", "--gpu-ids", "1", "--", "true")
	require.Equal(t, 1, r.code)
	r = n.runAs(userB, "release", "--gpu-ids", "1")
	require.Equal(t, 1, r.code)
	require.Equal(t, "Error: GPU 1 is reserved by chg-alice (run), not by chg-bob: only the owner, root or the admin group may release it", oneErrorLine(t, r))

	snap, err = n.store().Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, expires, snap.Reservations[g0.UUID].ExpiresAt, "alice's manual reservation is untouched")
	require.Equal(t, userA, snap.Reservations[g1.UUID].User)
	require.Equal(t, lease.Token, snap.Reservations[g1.UUID].Token)

	// alice ends her own run with Ctrl-C: the lease goes with it.
	require.NoError(t, run.Process.Signal(syscall.SIGINT))
	require.Error(t, run.Wait())
	require.Equal(t, map[int]string{0: userA}, n.reservations())

	// Root may act for alice.
	r = n.run("release", "--user", userA)
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, n.reservations())
}

func TestAdminGroupMembersMayActForOthers(t *testing.T) {
	accounttest.Ensure(t, userA)
	accounttest.Ensure(t, userC, adminGroup)
	n := newNode(t, idleGPUs(2), `admin.group = "`+adminGroup+`"`)
	r := n.runAs(userC, "reserve", "--user", userA, "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Equal(t, map[int]string{1: userA}, n.reservations())
	r = n.runAs(userA, "reserve", "--user", userC)
	require.Equal(t, 1, r.code)
	require.Equal(t, `Error: --user chg-carol: only root and members of the admin group "chg-admins" may act for another user; you are chg-alice`, oneErrorLine(t, r))
	r = n.runAs(userC, "admin", "--release", "--gpu-ids", "1")
	require.Equal(t, 0, r.code, r.stderr)
	require.Empty(t, n.reservations())
}
