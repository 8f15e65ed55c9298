package store

import (
	"embed"

	"github.com/redis/go-redis/v9"
)

//go:embed lua/*.lua
var luaFiles embed.FS

// script builds one operation's script: the shared helpers followed by the
// operation's body, so each operation stays a single EVALSHA.
func script(name string) *redis.Script {
	lib, err := luaFiles.ReadFile("lua/lib.lua")
	if err != nil {
		panic(err) // embedded at build time: cannot be missing
	}
	body, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic(err)
	}
	return redis.NewScript(string(lib) + "\n" + string(body))
}

var (
	allocateScript  = script("allocate")
	renewScript     = script("renew")
	releaseScript   = script("release")
	registerScript  = script("register")
	snapshotScript  = script("snapshot")
	enqueueScript   = script("enqueue")
	queueBeatScript = script("queue_beat")
	leaveScript     = script("leave")
	flagsScript     = script("flags")
)

// allScripts are loaded before pipelines, where EVALSHA has no EVAL fallback.
var allScripts = []*redis.Script{allocateScript, renewScript, releaseScript, registerScript,
	snapshotScript, enqueueScript, queueBeatScript, leaveScript, flagsScript}
