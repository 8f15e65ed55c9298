#!/bin/sh
# Tests of the Torque prologue and epilogue wrappers, run as pbs_mom runs
# them: the documented argument lists, an empty environment (no PATH), the
# real canhazgpu-prolog and canhazgpu-epilog on a real redis-server with
# fake GPUs.
#
# `go test ./internal/pbs` runs it with CANHAZGPU_TEST_BIN_DIR (the built
# programs) and CANHAZGPU_TEST_REDIS_URL (a private redis-server) set.
set -u

: "${CANHAZGPU_TEST_BIN_DIR:?set it to the directory of the built canhazgpu-prolog and canhazgpu-epilog}"
: "${CANHAZGPU_TEST_REDIS_URL:?set it to the URL of a private redis-server}"

here=$(cd "$(dirname "$0")" && pwd)
wrappers=$(dirname "$here")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/canhazgpu-torque-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

failures=0
n=0
check() { # check NAME WANT GOT
	n=$((n + 1))
	if [ "$2" = "$3" ]; then
		echo "ok $n - $1"
	else
		echo "not ok $n - $1: want [$2], got [$3]"
		failures=$((failures + 1))
	fi
}

uuid() { printf 'GPU-70e0%04d-0000-4000-8000-000000000000' "$1"; }

# A node with two fake GPUs and its own store node name.
cat >"$tmp/gpus.json" <<EOF
{"gpus": [{"index": 0, "uuid": "$(uuid 0)"}, {"index": 1, "uuid": "$(uuid 1)"}]}
EOF
write_config() { # write_config FILE REDIS_URL ON_STORE_ERROR
	cat >"$1" <<EOF
node = "torque$$"
[redis]
url = "$2"
dial_timeout = "200ms"
op_timeout = "500ms"
[gpu]
provider = "fake"
fake_file = "$tmp/gpus.json"
[slurm]
state_dir = "$tmp/state"
[pbs]
state_dir = "$tmp/state"
on_store_error = "$3"
EOF
}
write_config "$tmp/config.toml" "$CANHAZGPU_TEST_REDIS_URL" allow
write_config "$tmp/down.toml" "unix://$tmp/nobody-listens.sock" fail
printf '[pbs]\nno_such_key = 1\n' >"$tmp/bad.toml"

# mom CONFIG SCRIPT ARGS...: run a wrapper as pbs_mom does, with only the
# test's program paths and config in the environment; prints the status.
mom() {
	config=$1
	script=$2
	shift 2
	/usr/bin/env -i CANHAZGPU_PROLOG="$CANHAZGPU_TEST_BIN_DIR/canhazgpu-prolog" \
		CANHAZGPU_EPILOG="$CANHAZGPU_TEST_BIN_DIR/canhazgpu-epilog" \
		CANHAZGPU_ENV_DIR="$tmp/env" CANHAZGPU_CONFIG="$config" \
		"$wrappers/$script" "$@" >"$tmp/stdout" 2>"$tmp/stderr" </dev/null
	echo $?
}

limits2="neednodes=1:ppn=2:gpus=2,nodes=1:ppn=2:gpus=2,walltime=01:00:00"
limits1="neednodes=1:ppn=1:gpus=1,nodes=1:ppn=1:gpus=1,walltime=01:00:00"

# Prologue: $1 id, $2 user, $3 group, $4 name, $5 limits, $6 queue, $7 account.
check "prologue reserves" 0 "$(mom "$tmp/config.toml" prologue 11.head nobody nogroup train "$limits2" batch NULL)"
check "prologue prints nothing on stdout (it is the job's output file)" "" "$(cat "$tmp/stdout")"
check "env file" "CUDA_VISIBLE_DEVICES=$(uuid 0),$(uuid 1)
CANHAZGPU_GPU_INDICES=0,1" "$(cat "$tmp/env/11.head.env")"
check "the env file sources in sh" "$(uuid 0),$(uuid 1)" \
	"$(/bin/sh -c "set -a; . '$tmp/env/11.head.env'; set +a; /usr/bin/env" | sed -n 's/^CUDA_VISIBLE_DEVICES=//p')"

check "shortage requeues: exit 2, never 1" 2 "$(mom "$tmp/config.toml" prologue 12.head nobody nogroup small "$limits1" batch NULL)"
check "shortage says why in the job's error file" \
	"canhazgpu: pbs job 12.head of nobody: Not enough GPUs available. Requested: 1, Available: 0" "$(cat "$tmp/stderr")"
check "no env file for the requeued job" no "$(test -e "$tmp/env/12.head.env" && echo yes || echo no)"

# Epilogue: $1 id, $2 user, $3 group, $4 name, $5 session, $6 limits,
# $7 used, $8 queue, $9 account, $10 exit status.
check "epilogue releases" 0 "$(mom "$tmp/config.toml" epilogue 11.head nobody nogroup train 4242 "$limits2" "cput=00:00:01" batch NULL 0)"
check "epilogue removes the env file" no "$(test -e "$tmp/env/11.head.env" && echo yes || echo no)"
check "epilogue.parallel twice is fine" 0 "$(mom "$tmp/config.toml" epilogue.parallel 11.head nobody nogroup train 4242 "$limits2" "cput=00:00:01" batch NULL 0)"

# Torque 6 arguments ($8 script, $9 hosts) on a sister host.
check "prologue.parallel with Torque 6 arguments" 0 \
	"$(mom "$tmp/config.toml" prologue.parallel 12.head nobody nogroup small "$limits1" batch NULL /var/spool/torque/mom_priv/jobs/12.head.SC "node1,node2")"
check "prologue.parallel env file" "CUDA_VISIBLE_DEVICES=$(uuid 0)
CANHAZGPU_GPU_INDICES=0" "$(cat "$tmp/env/12.head.env")"
check "job without gpus= runs" 0 "$(mom "$tmp/config.toml" prologue 13.head nobody nogroup cpu "nodes=1:ppn=4,walltime=00:10:00" batch NULL)"

check "store down (on_store_error = fail): prologue requeues" 2 "$(mom "$tmp/down.toml" prologue 14.head nobody nogroup j "$limits1" batch NULL)"
check "store down: epilogue still exits 0" 0 "$(mom "$tmp/down.toml" epilogue 14.head nobody nogroup j 1 "$limits1" "" batch NULL 0)"
check "bad config: prologue requeues" 2 "$(mom "$tmp/bad.toml" prologue 15.head nobody nogroup j "$limits1" batch NULL)"
check "no arguments: prologue requeues" 2 "$(mom "$tmp/config.toml" prologue)"
check "no arguments: epilogue exits 0" 0 "$(mom "$tmp/config.toml" epilogue)"

check "epilogue of the last job" 0 "$(mom "$tmp/config.toml" epilogue 12.head nobody nogroup small 1 "$limits1" "" batch NULL 0)"
check "all GPUs free again" 0 "$(mom "$tmp/config.toml" prologue 16.head nobody nogroup train "$limits2" batch NULL)"
mom "$tmp/config.toml" epilogue 16.head >/dev/null

# The .parallel scripts are installed copies: they must not drift.
for s in prologue epilogue; do
	check "$s.parallel is $s" same "$(cmp -s "$wrappers/$s" "$wrappers/$s.parallel" && echo same || echo differs)"
done

echo "1..$n"
if [ "$failures" -gt 0 ]; then
	echo "$failures of $n failed"
	exit 1
fi
