package store

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"

	"canhazgpu/allocator"
)

//go:embed *.lua
var luaFiles embed.FS

// op is one store operation: a Lua body (NAME.lua, beside its Go caller) run as a function
// of the library, or on a server without functions as a script of its own.
type op struct {
	name     string
	readOnly bool          // registered with no-writes and called with FCALL_RO
	function string        // chg_<version>_<name>
	script   *redis.Script // the EVAL fallback: prelude, lib.lua and the body
	// unconfirmed: a change that waits for no replica (redis.wait_replicas)
	// because no one is told of it and the next call makes it again.
	unconfirmed bool
}

var (
	allocateOp  = &op{name: "allocate"}
	renewOp     = &op{name: "renew"}
	releaseOp   = &op{name: "release"}
	registerOp  = &op{name: "register"}
	snapshotOp  = &op{name: "snapshot", readOnly: true}
	enqueueOp   = &op{name: "enqueue"}
	queueBeatOp = &op{name: "queue_beat"}
	leaveOp     = &op{name: "leave"}
	flagsOp     = &op{name: "flags"}
	forgetOp    = &op{name: "forget"}
	holdJobOp   = &op{name: "hold_job"}
	idleOp      = &op{name: "idle"}
	// mark_use is the health check's read: a replica that is down must
	// neither fail nor stall it for the idle clock it writes.
	markUseOp   = &op{name: "mark_use", unconfirmed: true}
	keepAliveOp = &op{name: "keep_alive"}

	violationsOp     = &op{name: "violations"}
	violationKillsOp = &op{name: "violation_kills"}
	violationsReadOp = &op{name: "violations_read", readOnly: true}

	// ops is every operation, in the library's order.
	ops = []*op{allocateOp, renewOp, releaseOp, registerOp, snapshotOp, enqueueOp, queueBeatOp, leaveOp, flagsOp, forgetOp,
		holdJobOp, idleOp, markUseOp, keepAliveOp, violationsOp, violationKillsOp, violationsReadOp}
	library = buildLibrary(ops)
)

// functionLibrary is the Redis function library of this build.
type functionLibrary struct {
	name    string // canhazgpu_<version>
	version string // first 12 hex digits of the sha256 of the code
	code    string // for FUNCTION LOAD
}

// LibraryName is the name of this build's Redis function library.
func LibraryName() string { return library.name }

// LibraryVersion identifies this build's store code: the first 12 hex
// digits of the sha256 of the library before the version is written into
// its names. Builds with the same operations share it; builds that differ
// have libraries and functions of different names, so nodes running
// different builds can share one Redis during an upgrade.
func LibraryVersion() string { return library.version }

// versionMark stands for the version while the code is hashed.
const versionMark = "@VERSION@"

func luaFile(name string) string {
	b, err := luaFiles.ReadFile(name + ".lua")
	if err != nil {
		panic(err) // embedded at build time: cannot be missing
	}
	return string(b)
}

// prelude gives the Lua code the Go constants it shares with the rest of
// the program, so that each has one source.
func prelude() string {
	var names, defaults []string
	def := allocator.Policy{}.WithDefaults()
	for _, f := range policyFields {
		names = append(names, "'"+f.name+"'")
		defaults = append(defaults, fmt.Sprintf("%s = %d", f.name, f.get(def)))
	}
	return fmt.Sprintf("local MAX_GPUS = %d\nlocal POLICY_FIELDS = {%s}\nlocal POLICY_DEFAULTS = {%s}\n",
		allocator.MaxGPUsPerNode, strings.Join(names, ", "), strings.Join(defaults, ", "))
}

// buildLibrary makes the library text (the shared code once, then each
// operation's body as a function) and each operation's fallback script.
func buildLibrary(ops []*op) functionLibrary {
	common := prelude() + luaFile("lib") + "\n"
	var b strings.Builder
	b.WriteString(common)
	for _, o := range ops {
		body := luaFile(o.name)
		o.script = redis.NewScript(common + body)
		fmt.Fprintf(&b, "\nlocal function op_%s(KEYS, ARGV)\n%s\nend\n", o.name, body)
	}
	b.WriteString("\n")
	for _, o := range ops {
		flags := ""
		if o.readOnly {
			flags = ", flags = {'no-writes'}"
		}
		fmt.Fprintf(&b, "redis.register_function{function_name = 'chg_%s_%s', callback = op_%s%s}\n",
			versionMark, o.name, o.name, flags)
	}
	sum := sha256.Sum256([]byte(b.String()))
	version := hex.EncodeToString(sum[:])[:12]
	lib := functionLibrary{name: "canhazgpu_" + version, version: version}
	lib.code = "#!lua name=" + lib.name + "\n" + strings.ReplaceAll(b.String(), versionMark, version)
	for _, o := range ops {
		o.function = "chg_" + version + "_" + o.name
	}
	return lib
}
