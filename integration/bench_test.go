package integration

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// clientCommands are the commands the programs send that a function or
// script cannot (Redis also counts their own calls, such as the HSET
// inside allocate.lua; those are no round trips): each call is one round
// trip.
var clientCommands = []string{"fcall", "fcall_ro", "function", "evalsha", "eval", "evalsha_ro", "eval_ro",
	"hello", "ping", "select", "auth", "client", "script"}

// roundTrips reads how many client commands the server has served.
func roundTrips(b *testing.B, rdb *redis.Client) int64 {
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	require.NoError(b, err)
	var n int64
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimPrefix(strings.TrimSpace(line), "cmdstat_"), ":")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, "|") // client|setinfo → client
		if !slices.Contains(clientCommands, name) {
			continue
		}
		for kv := range strings.SplitSeq(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if k == "calls" || k == "rejected_calls" {
				c, err := strconv.ParseInt(v, 10, 64)
				require.NoError(b, err)
				n += c
			}
		}
	}
	return n
}

// BenchmarkSlurmJob runs, per op, canhazgpu-prolog and canhazgpu-epilog
// for one two-GPU job on an 8-GPU node with the fake provider, as slurmd
// runs them: fresh processes, Slurm's environment, the config file. It
// reports the median and 90th percentile wall time of each program and the
// store round trips each makes (Redis INFO commandstats, connection
// handshake included; commands run inside functions excluded).
//
// Rerun: go test -run '^$' -bench SlurmJob -benchtime 300x ./integration/
func BenchmarkSlurmJob(b *testing.B) {
	h := newHost(b)
	rdb := srv.Client()
	defer rdb.Close()
	run := func(program, context, job string) time.Duration {
		start := time.Now()
		r := runProgram(b, program, h.slurmEnv(context, job))
		d := time.Since(start)
		if r.rc != 0 || r.stderr != "" {
			b.Fatalf("%s job %s: rc %d: %s%s", program, job, r.rc, r.stdout, r.stderr)
		}
		return d
	}
	// Warm up: the functions get loaded into the server, the page cache holds
	// the binaries.
	run("canhazgpu-prolog", "prolog_slurmd", "0")
	run("canhazgpu-epilog", "epilog_slurmd", "0")

	var prolog, epilog []time.Duration
	var prologTrips, epilogTrips int64
	b.ResetTimer()
	for i := range b.N {
		job := strconv.Itoa(i + 1)
		b.StopTimer()
		before := roundTrips(b, rdb)
		b.StartTimer()
		prolog = append(prolog, run("canhazgpu-prolog", "prolog_slurmd", job))
		b.StopTimer()
		mid := roundTrips(b, rdb)
		b.StartTimer()
		epilog = append(epilog, run("canhazgpu-epilog", "epilog_slurmd", job))
		b.StopTimer()
		after := roundTrips(b, rdb)
		b.StartTimer()
		prologTrips += mid - before
		epilogTrips += after - mid
	}
	b.StopTimer()
	report := func(name string, ds []time.Duration, trips int64) {
		slices.Sort(ds)
		b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-median-ms")
		b.ReportMetric(float64(ds[len(ds)*9/10].Microseconds())/1000, name+"-p90-ms")
		b.ReportMetric(float64(trips)/float64(len(ds)), name+"-roundtrips")
	}
	report("prolog", prolog, prologTrips)
	report("epilog", epilog, epilogTrips)
}
