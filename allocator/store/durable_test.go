package store

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

// replicated starts a primary with one replica; the primary knows the
// roles' users (the replica is read only by the default user).
func replicated(t testing.TB) (primary, replica *redistest.Server) {
	t.Helper()
	users := map[string]string{}
	for _, r := range []Role{RoleAdmin, RoleCLI} {
		rules, err := ACLRules(r)
		require.NoError(t, err)
		users[string(r)] = "on >secret " + rules
	}
	primary, err := redistest.Start(redistest.Options{Users: users})
	require.NoError(t, err)
	t.Cleanup(primary.Stop)
	replica, err = redistest.StartReplica(primary, redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(replica.Stop)
	// Its first copy done, so that a change's wait measures replication,
	// not the start (which a loaded machine stretches past short waits).
	require.NoError(t, replica.WaitReplicaLinkUp(10*time.Second))
	return primary, replica
}

// durable opens a store on srv as role that waits for one replica.
func durable(t *testing.T, srv *redistest.Server, role Role, wait time.Duration) *Store {
	t.Helper()
	s, err := Open(context.Background(), Conn{URL: srv.URL(), Username: string(role), Password: "secret",
		DialTimeout: time.Second, OpTimeout: 2 * time.Second, WaitReplicas: 1, WaitTimeout: wait}, "durable", Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

// TestChangesWaitForReplicas: with redis.wait_replicas, an acknowledged
// grant and release are on the replica the moment they are acknowledged,
// through the CLI's credential too (WAIT and PEXPIRE are in its rules).
func TestChangesWaitForReplicas(t *testing.T) {
	ctx := context.Background()
	primary, replica := replicated(t)
	_, err := durable(t, primary, RoleAdmin, time.Second).Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	cli := durable(t, primary, RoleCLI, time.Second)
	onReplica, err := Open(ctx, Conn{URL: replica.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, "durable", Options{})
	require.NoError(t, err)
	defer onReplica.Close()

	g, err := cli.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	snap, err := onReplica.Snapshot(ctx)
	require.NoError(t, err)
	require.Equal(t, "alice", snap.Reservations[g.GPUs[0]].User, "the replica has the grant when it is acknowledged")

	_, err = cli.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), User: "alice", GPUs: g.GPUs, Token: g.Token})
	require.NoError(t, err)
	snap, err = onReplica.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.Reservations, "the replica has the release when it is acknowledged")
}

// TestHealthCheckReadWaitsForNoReplica: the health check's snapshot,
// which writes the idle clock, neither fails nor stalls while no replica
// confirms, when a grant does.
func TestHealthCheckReadWaitsForNoReplica(t *testing.T) {
	ctx := context.Background()
	primary, replica := replicated(t)
	// Set up while the replica answers, waiting as long as a loaded
	// machine needs; the short wait is for the paused replica.
	patient := durable(t, primary, RoleAdmin, 1500*time.Millisecond)
	_, err := patient.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	g, err := patient.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	admin := durable(t, primary, RoleAdmin, 200*time.Millisecond)

	replica.Pause(t)
	snap, err := admin.SnapshotMarkingUse(ctx, nil, 0) // every grant in use, its clock due: a write
	require.NoError(t, err)
	require.False(t, snap.Reservations[g.GPUs[0]].ActiveAt.IsZero(), "the clock was written")
	_, err = admin.Allocate(ctx, manual("bob", 1))
	var nr *NotReplicatedError
	require.True(t, errors.As(err, &nr), "a grant still waits: %v", err)
}

// TestTooFewReplicasIsUncertain: a grant no replica confirms is reported
// as the store being unavailable, with a *NotReplicatedError; retrying with
// the same request id gives the same grant once a replica confirms it, and
// is refused again while none does, on another connection too (WAIT
// promises only the connection's own writes; the retry answered from the
// stored reply writes nothing but touches that reply).
func TestTooFewReplicasIsUncertain(t *testing.T) {
	ctx := context.Background()
	primary, replica := replicated(t)
	_, err := durable(t, primary, RoleAdmin, 1500*time.Millisecond).Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	admin := durable(t, primary, RoleAdmin, 200*time.Millisecond)

	cont := replica.Pause(t)

	req := manual("alice", 1)
	unconfirmed, err := admin.Allocate(ctx, req)
	require.ErrorIs(t, err, allocator.ErrUnavailable)
	require.Len(t, unconfirmed.GPUs, 1, "the primary's grant comes back with the error, to be confirmed or given back")
	var nr *NotReplicatedError
	require.True(t, errors.As(err, &nr), "%v", err)
	require.Equal(t, NotReplicatedError{Want: 1, Got: 0, Timeout: 200 * time.Millisecond}, *nr)
	require.EqualError(t, err, "allocate: reservation store unavailable at "+primary.URL()+": the change was confirmed by 0 of "+
		"the 1 replicas redis.wait_replicas asks for within 200ms, so a failover may lose it")

	again := durable(t, primary, RoleAdmin, 200*time.Millisecond)
	_, err = again.Allocate(ctx, req)
	require.True(t, errors.As(err, &nr), "a retry on a fresh connection still waits for the first attempt's write: %v", err)

	// Once the replica runs again, a retry that may wait long enough
	// (a loaded machine can take longer than 200ms to catch up; the
	// wait must stay under the connection's 2s op_timeout) gets the
	// first attempt's grant.
	cont()
	require.NoError(t, replica.WaitReplicaLinkUp(10*time.Second))
	patient := durable(t, primary, RoleAdmin, 1500*time.Millisecond)
	g, err := patient.Allocate(ctx, req)
	require.NoError(t, err)
	snap, err := admin.Snapshot(ctx)
	require.NoError(t, err)
	require.Len(t, snap.Reservations, 1, "the retries granted nothing more")
	require.Equal(t, g.Token, snap.Reservations[g.GPUs[0]].Token, "the retry returned the first attempt's grant")
	require.Equal(t, unconfirmed, g, "the unconfirmed grant was the one the retry confirmed")
}

func TestDurabilitySettingsChecked(t *testing.T) {
	for _, tt := range []struct {
		conn    Conn
		wantErr string
	}{
		{Conn{URL: srv.URL(), WaitReplicas: -1, WaitTimeout: time.Second},
			"redis wait_replicas -1: want 0 (acknowledge on the primary's reply) or more replicas"},
		{Conn{URL: srv.URL(), WaitReplicas: 1},
			"redis wait_timeout 0s: want a positive duration when wait_replicas is set"},
		{Conn{URL: srv.URL(), WaitReplicas: 1, WaitTimeout: 2 * time.Second, OpTimeout: 2 * time.Second},
			"redis wait_timeout 2s: want less than op_timeout (2s), whose socket reads the wait's reply"},
	} {
		_, err := Open(context.Background(), tt.conn, "x", Options{})
		require.EqualError(t, err, tt.wantErr)
	}
}

// TestScriptsWaitForReplicasToo: on a server without functions (see
// TestServerWithoutFunctionsGetsScripts) a change goes as EVALSHA with
// its WAIT, loading the script on NOSCRIPT, and is on the replica when it
// is acknowledged.
func TestScriptsWaitForReplicasToo(t *testing.T) {
	ctx := context.Background()
	primary, err := redistest.Start(redistest.Options{Args: []string{
		"--rename-command", "FCALL", "", "--rename-command", "FCALL_RO", "", "--rename-command", "FUNCTION", ""}})
	require.NoError(t, err)
	t.Cleanup(primary.Stop)
	replica, err := redistest.StartReplica(primary, redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(replica.Stop)
	s, err := Open(ctx, Conn{URL: primary.URL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second,
		WaitReplicas: 1, WaitTimeout: time.Second}, "old", Options{})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	require.True(t, s.run.eval.Load(), "the store runs scripts")

	c := replica.Client()
	defer c.Close()
	held, err := c.HExists(ctx, keysFor("old").res, g.GPUs[0]).Result()
	require.NoError(t, err)
	require.True(t, held, "the replica has the grant when it is acknowledged")
}

// TestUserWithoutWaitIsRefusedBeforeAnyChange: a CLI user made from the
// rules of a version before wait_replicas (no PEXPIRE, no WAIT) gets
// ErrNotPermitted and the store is unchanged, not a grant applied and
// then refused its wait.
func TestUserWithoutWaitIsRefusedBeforeAnyChange(t *testing.T) {
	ctx := context.Background()
	primary, _ := replicated(t)
	_, err := durable(t, primary, RoleAdmin, time.Second).Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	rules, err := ACLRules(RoleCLI)
	require.NoError(t, err)
	earlier := strings.Replace(rules, " +pexpire +wait", "", 1)
	require.NotEqual(t, rules, earlier)
	c := primary.Client()
	defer c.Close()
	args := []any{"ACL", "SETUSER", string(RoleCLI), "reset", "on", ">secret"}
	for _, r := range strings.Fields(earlier) {
		args = append(args, r)
	}
	require.NoError(t, c.Do(ctx, args...).Err())
	before, err := redistest.Dump(ctx, c)
	require.NoError(t, err)

	_, err = durable(t, primary, RoleCLI, time.Second).Allocate(ctx, manual("alice", 1))
	require.ErrorIs(t, err, allocator.ErrNotPermitted)
	after, err := redistest.Dump(ctx, c)
	require.NoError(t, err)
	require.Equal(t, before, after, "nothing changed")
}
