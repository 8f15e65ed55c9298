#!/usr/bin/env bash
# demo.sh: show canhazgpu on a fake node of four GPUs, against a private
# redis-server that lives in a temporary directory for the length of the
# demo. Run it through `make demo` (which builds bin/canhazgpu first).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CANHAZGPU:-$PWD/bin/canhazgpu}
healthcheck=${CANHAZGPU_HEALTHCHECK:-$PWD/bin/canhazgpu-healthcheck}
for b in "$bin" "$healthcheck"; do
	if [ ! -x "$b" ]; then
		echo "demo: $b not found; run 'make build' first" >&2
		exit 1
	fi
done
redis_server=$(command -v redis-server) || {
	echo "demo: redis-server not found; run scripts/install-deps.sh as root" >&2
	exit 1
}

dir=$(mktemp -d /tmp/canhazgpu-demo.XXXXXX)
redis_pid=""
web_pid=""
cleanup() {
	if [ -n "$web_pid" ]; then
		kill "$web_pid" 2>/dev/null || true
		wait "$web_pid" 2>/dev/null || true
	fi
	if [ -n "$redis_pid" ]; then
		kill "$redis_pid" 2>/dev/null || true
		wait "$redis_pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT

# A private Redis on a unix socket only (port 0: no TCP listener).
"$redis_server" --port 0 --unixsocket "$dir/redis.sock" --unixsocketperm 700 \
	--dir "$dir" --save "" --appendonly no --logfile "$dir/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
	[ -S "$dir/redis.sock" ] && break
	sleep 0.05
done
[ -S "$dir/redis.sock" ] || { echo "demo: redis-server did not start; see $dir/redis.log" >&2; exit 1; }

# A fake node: GPU 3 is used by bob's vLLM server without a reservation;
# the others are idle.
cat >"$dir/gpus.json" <<'EOF'
{
  "gpus": [
    {"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_used_mb": 3, "utilization": 0},
    {"index": 1, "name": "NVIDIA H100 80GB HBM3", "memory_used_mb": 3, "utilization": 0},
    {"index": 2, "name": "NVIDIA H100 80GB HBM3", "memory_used_mb": 45, "utilization": 0},
    {"index": 3, "name": "NVIDIA H100 80GB HBM3", "memory_used_mb": 20480, "utilization": 87,
     "processes": [
       {"pid": 12345, "name": "python3", "user": "bob", "used_memory_mb": 20000,
        "cmdline": ["python3", "-m", "vllm.entrypoints.openai.api_server", "--model", "mistralai/Mistral-7B-Instruct-v0.1"]},
       {"pid": 67890, "name": "jupyter", "user": "bob", "used_memory_mb": 480,
        "cmdline": ["jupyter", "notebook"]}]}
  ]
}
EOF
# Idle manual reservations are warned about after 2s instead of 30m, so
# the health check below has one to show.
cat >"$dir/config.toml" <<'EOF'
[idle]
manual_warn_after = "2s"
EOF
mkdir "$dir/state"
export CANHAZGPU_CONFIG="$dir/config.toml"
export CANHAZGPU_REDIS_URL="unix://$dir/redis.sock"
export CANHAZGPU_NODE=demo-node
export CANHAZGPU_GPU_PROVIDER=fake
export CANHAZGPU_GPU_FAKE_FILE="$dir/gpus.json"
export CANHAZGPU_SLURM_STATE_DIR="$dir/state" CANHAZGPU_PBS_STATE_DIR="$dir/state"
export CANHAZGPU_HEALTH_SCONTROL="$dir/no-scontrol"

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s$ %s%s\n' "$bold" "$*" "$plain"; }
chg() {
	step "canhazgpu $*"
	"$bin" "$@"
}

chg status
step "canhazgpu run --gpus 2 -- sh -c 'echo ...; sleep 1'"
"$bin" run --gpus 2 -- sh -c 'echo "the command runs with CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES CUDA_DEVICE_ORDER=$CUDA_DEVICE_ORDER"; sleep 1'
chg reserve --gpus 1 --duration 2h --note "demo notebook"
step "canhazgpu run --gpus 1 -- sleep 3 &"
"$bin" run --gpus 1 -- sleep 3 &
run_pid=$!
sleep 0.5
chg status
step "canhazgpu reserve --gpus 2   # more than is free"
"$bin" reserve --gpus 2 || echo "(exit status $?)"
wait "$run_pid"
step "canhazgpu-healthcheck   # what the node's periodic check says"
"$healthcheck" || echo "(exit status $?)"
chg release
chg status
chg report --days 1

# The dashboard of the same store, on a free port of this machine only,
# until Enter (or the end of the input).
step "canhazgpu web --listen 127.0.0.1:0 &"
"$bin" web --listen 127.0.0.1:0 2>"$dir/web.log" &
web_pid=$!
url=""
for _ in $(seq 100); do
	url=$(sed -n 's|^canhazgpu web: serving \(http://[^ ]*\)$|\1|p' "$dir/web.log")
	[ -n "$url" ] && break
	sleep 0.05
done
[ -n "$url" ] || { echo "demo: the dashboard did not start:" >&2; cat "$dir/web.log" >&2; exit 1; }
echo "The dashboard: $url"
printf 'Press Enter to end the demo. '
read -r _ || true
echo
