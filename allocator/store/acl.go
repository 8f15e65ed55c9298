package store

import (
	"slices"
	"strings"

	"canhazgpu/allocator"
)

// Role is a Redis user's part in canhazgpu; ACLRules gives its rules.
type Role string

// The roles. A site creates one Redis user per role and gives each
// program the credential of its role.
const (
	// RoleAdmin is for root programs: the scheduler prolog and epilog, the
	// health check and `canhazgpu admin`. Everything canhazgpu does, on
	// canhazgpu's keys only.
	RoleAdmin Role = "admin"
	// RoleCLI is for the interactive CLI, whose credential may leak to the
	// users who run it. It calls the operations and may change
	// interactive state only: it reads batch reservations, registrations,
	// flags, the policy and the node registry, and may not change them.
	RoleCLI Role = "cli"
	// RoleMonitor only reads: snapshots, the registry and the history.
	RoleMonitor Role = "monitor"
)

// Roles lists every role.
var Roles = []Role{RoleAdmin, RoleCLI, RoleMonitor}

// The commands each role may send: to the server, and from inside the
// operations (Redis checks the caller's ACL for every command a function
// runs). AUTH and HELLO need no permission.
var (
	// clientCommands are what go-redis itself sends: SELECT for a URL
	// with a database number, and on a Cluster the slot map and the
	// command table it routes by.
	clientCommands = []string{"select", "cluster|slots", "command"}
	// readCommands are the reads of every operation and of History and
	// Nodes.
	readCommands = []string{"time", "get", "hget", "hgetall", "hmget", "hexists", "zrange", "zrangebyscore", "zrank", "zcard", "smembers"}
	// interactiveWrites are the writes of the operations the CLI runs.
	interactiveWrites = []string{"set", "hset", "hdel", "hincrby", "zadd", "zrem", "zremrangebyrank", "zremrangebyscore"}
	// adminWrites are the writes only root programs make: DEL (flags.lua,
	// forget.lua), the node registry and loading the function library.
	adminWrites = []string{"del", "sadd", "srem", "function|load"}
	// durableCommands make a change wait for replicas (redis.wait_replicas;
	// see runner.replicated): PEXPIRE of the request's stored reply, then
	// WAIT.
	durableCommands = []string{"pexpire", "wait"}
)

// ACLRules returns the Redis 7 ACL rules of a role, to follow the user's
// name and password in an ACL file line or an ACL SETUSER command:
//
//	user canhazgpu-cli on #<sha256 of the password> <rules>
//	ACL SETUSER canhazgpu-cli on ><password> <rules>
//
// No role may run other scripts (EVAL, EVALSHA, SCRIPT), flush, scan or
// list keys, or change the server's configuration or ACL; the admin role
// alone loads functions. The rules need Redis 7: on Redis 6 (no FCALL, no
// read-only key patterns) see docs/store.md.
func ACLRules(role Role) (string, error) {
	all := keysFor("*") // each key name as a pattern over every node
	var cmds, keys []string
	switch role {
	case RoleAdmin:
		cmds = slices.Concat(clientCommands, []string{"fcall", "fcall_ro"}, readCommands, interactiveWrites, adminWrites, durableCommands)
		keys = []string{"~" + prefix + "*"}
	case RoleCLI:
		cmds = slices.Concat(clientCommands, []string{"fcall", "fcall_ro"}, readCommands, interactiveWrites, durableCommands)
		for _, k := range []string{all.res, all.mru, all.hist, all.meta, all.q, all.qe, all.qx, all.reply("*", false)} {
			keys = append(keys, "~"+k)
		}
		for _, k := range []string{all.gpus, all.bres, all.flags, all.policy, registryKey} {
			keys = append(keys, "%R~"+k)
		}
		// Violations are the health check's to write, anyone's to read.
		for _, k := range []string{all.viol, all.violt} {
			keys = append(keys, "%R~"+k)
		}
	case RoleMonitor:
		cmds = slices.Concat(clientCommands, []string{"fcall_ro"}, readCommands)
		keys = []string{"%R~" + prefix + "*"}
	default:
		return "", &allocator.InputError{Field: "role", Value: string(role), Accepted: "admin, cli or monitor"}
	}
	rules := []string{"resetkeys", "resetchannels", "-@all"}
	for _, c := range cmds {
		rules = append(rules, "+"+c)
	}
	return strings.Join(append(rules, keys...), " "), nil
}
