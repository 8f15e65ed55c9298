package store

import (
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"canhazgpu/allocator"
	"canhazgpu/internal/redistest"
)

func TestLibraryIsNamedAfterItsCode(t *testing.T) {
	require.Regexp(t, regexp.MustCompile(`^[0-9a-f]{12}$`), LibraryVersion())
	require.Equal(t, "canhazgpu_"+LibraryVersion(), LibraryName())
	require.Regexp(t, regexp.MustCompile(`^#!lua name=`+LibraryName()+"\n"), library.code)
	require.NotContains(t, library.code, versionMark)
	require.Equal(t, "chg_"+LibraryVersion()+"_allocate", allocateOp.function)
}

func TestFunctionsAreLoadedWhenMissing(t *testing.T) {
	ctx := context.Background()
	own, err := redistest.Start(redistest.Options{})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	s, err := Open(ctx, Conn{URL: own.SocketURL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, "fn", Options{})
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	require.NoError(t, s.rdb.Ping(ctx).Err()) // connect first: the handshake is not an operation's round trip
	trips := countRoundTrips(s)
	snap, err := s.Snapshot(ctx)
	require.NoError(t, err)
	require.Empty(t, snap.GPUs)
	require.Equal(t, int64(3), trips.Load(), "FCALL_RO (not found), FUNCTION LOAD, FCALL_RO")

	libs, err := s.rdb.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: "canhazgpu_*"}).Result()
	require.NoError(t, err)
	require.Len(t, libs, 1)
	require.Equal(t, LibraryName(), libs[0].Name)
	flags := map[string][]string{}
	for _, f := range libs[0].Functions {
		flags[f.Name] = f.Flags
	}
	require.Len(t, flags, len(ops))
	require.Equal(t, []string{"no-writes"}, flags[snapshotOp.function])
	require.Empty(t, flags[allocateOp.function])

	trips.Reset()
	_, err = s.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	require.Equal(t, int64(2), trips.Load(), "FCALL register, SADD to the registry")

	// Someone flushed the functions: the next operation loads them again.
	require.NoError(t, s.rdb.FunctionFlush(ctx).Err())
	trips.Reset()
	_, err = s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	require.Equal(t, int64(3), trips.Load())
	require.NoError(t, s.rdb.FunctionFlush(ctx).Err())
	snaps, err := s.Snapshots(ctx)
	require.NoError(t, err, "a pipeline loads them too")
	require.Len(t, snaps[0].Reservations, 1)

	// Functions are data: they survive a restart with the AOF.
	require.NoError(t, own.Restart())
	c := own.Client()
	defer c.Close()
	libs, err = c.FunctionList(ctx, redis.FunctionListQuery{LibraryNamePattern: LibraryName()}).Result()
	require.NoError(t, err)
	require.Len(t, libs, 1)
}

// commandLog records the name of every command a client sends.
type commandLog struct {
	mu    sync.Mutex
	names []string
}

func (l *commandLog) add(cmds ...redis.Cmder) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range cmds {
		l.names = append(l.names, c.Name())
	}
}

func (l *commandLog) count(name string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.names {
		if c == name {
			n++
		}
	}
	return n
}

func (l *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.add(cmd)
		return next(ctx, cmd)
	}
}

func (l *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		l.add(cmds...)
		return next(ctx, cmds)
	}
}

// TestServerWithoutFunctionsGetsScripts runs the store against a server
// that answers FCALL as Redis 6 does (unknown command: here renamed away,
// as no Redis 6 server can be installed on the test machines).
func TestServerWithoutFunctionsGetsScripts(t *testing.T) {
	ctx := context.Background()
	own, err := redistest.Start(redistest.Options{Args: []string{
		"--rename-command", "FCALL", "", "--rename-command", "FCALL_RO", "", "--rename-command", "FUNCTION", ""}})
	require.NoError(t, err)
	t.Cleanup(own.Stop)
	open := func() (*Store, *commandLog) {
		s, err := Open(ctx, Conn{URL: own.SocketURL(), DialTimeout: time.Second, OpTimeout: 2 * time.Second}, "old", Options{})
		require.NoError(t, err)
		t.Cleanup(func() { s.Close() })
		log := &commandLog{}
		s.rdb.AddHook(log)
		return s, log
	}
	s, log := open()
	_, err = s.Register(ctx, fakeGPUs(2), false)
	require.NoError(t, err)
	g, err := s.Allocate(ctx, manual("alice", 1))
	require.NoError(t, err)
	other, err := s.ForNode("old2")
	require.NoError(t, err)
	_, err = other.Snapshot(ctx)
	require.NoError(t, err)
	_, err = s.Release(ctx, allocator.Release{RequestID: allocator.NewRequestID(), Token: g.Token})
	require.NoError(t, err)
	require.Equal(t, 1, log.count("fcall"), "asked once; the answer holds for the store's life (and its other nodes)")
	require.Zero(t, log.count("fcall_ro"))
	require.Positive(t, log.count("evalsha"))

	// A fresh store whose first call is a pipeline, on a server that lost
	// its scripts: FCALL_RO unknown, then EVALSHA NOSCRIPT, then loaded.
	c := own.Client()
	defer c.Close()
	require.NoError(t, c.ScriptFlush(ctx).Err())
	fresh, flog := open()
	snaps, err := fresh.Snapshots(ctx)
	require.NoError(t, err)
	require.Len(t, snaps, 1)
	require.Len(t, snaps[0].GPUs, 2)
	require.Equal(t, 1, flog.count("fcall_ro"))
	require.Equal(t, 1, flog.count("script"), "SCRIPT LOAD once")
	_, err = fresh.Snapshots(ctx)
	require.NoError(t, err)
	require.Equal(t, 1, flog.count("fcall_ro"))

	// A pipeline whose calls carry arguments: the scripts get them too.
	t0 := time.Now().Add(-time.Minute)
	_, err = s.RecordViolations(ctx, violationRun(t0, 10))
	require.NoError(t, err)
	recs, err := fresh.AllViolations(ctx, t0)
	require.NoError(t, err)
	require.Len(t, recs, 1)
	recs, err = fresh.AllViolations(ctx, t0.Add(time.Second))
	require.NoError(t, err)
	require.Empty(t, recs, "last seen before since")
}

func TestRedis6UnknownCommandIsRecognised(t *testing.T) {
	for _, msg := range []string{
		"ERR unknown command `FCALL`, with args beginning with: `chg_0123456789ab_allocate`, `7`, ", // Redis 6.2
		"ERR unknown command 'FCALL_RO', with args beginning with: 'chg_x' '8' ",                    // Redis 7 with FCALL renamed
	} {
		require.True(t, isUnknownFCall(msg), msg)
	}
	require.False(t, isUnknownFCall("ERR unknown command 'HSETEX'"))
}
