#!/usr/bin/env bash
# A multi-node Ray cluster on this one machine, for development and tests.
#
#   cluster/local-cluster.sh start [--workers N] [--cpus N] [--slots N] [--object-store-mb MB] [--dir DIR]
#   cluster/local-cluster.sh status [--dir DIR]
#   cluster/local-cluster.sh stop   [--dir DIR]
#
# `start` runs `ray start --head` and then N x `ray start --address=HEAD` (N=1 by default), each a
# separate Ray node with its own raylet, object store and resources, exactly as on a real cluster.
# Every node declares the custom resource `model_slots` (--slots, default 1): a stand-in for a GPU
# on machines without one. A job config with `resources_per_actor: {model_slots: 1}` then gets one
# model actor per node, as GPU actors get one GPU each. The GCS address and the dashboard URL (for
# `ray job submit`) are printed and written to DIR/address and DIR/dashboard.
#
# Everything lives under DIR (default: /tmp/speech-cluster-$USER): Ray's temp dir, the logs, the
# pid files. Keep DIR short: Ray's Unix socket paths under it must stay below 108 characters.
# All ports are picked free at start, so this cluster never collides with another Ray on the
# machine. `stop` ends exactly the processes this script started: each node runs in its own
# process group (`ray start --block` under setsid); its `ray start` process is sent SIGTERM (Ray
# drains the node and stops its processes) and whatever is left in the group after 45 s,
# SIGKILL. It never runs `ray stop`, which would stop every Ray on the machine.
#
# Environment: RAY (the ray executable; default: the one next to this repo's .venv python, else
# `ray` on PATH). The nodes inherit this shell's environment, e.g. HF_HOME, RAY_AUTH_MODE.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
if [[ -z "${RAY:-}" ]]; then
  if [[ -x "$repo/.venv/bin/ray" ]]; then RAY="$repo/.venv/bin/ray"; else RAY="$(command -v ray)"; fi
fi
PYTHON="$(dirname "$RAY")/python"

command="${1:-}"
[[ $# -gt 0 ]] && shift
workers=1 cpus=2 slots=1 object_store_mb=1024 dir="/tmp/speech-cluster-${USER:-$(id -un)}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --slots) slots="$2"; shift 2 ;;
    --object-store-mb) object_store_mb="$2"; shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    *) echo "local-cluster.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done

die() { echo "local-cluster.sh: $*" >&2; exit 1; }

# N free TCP ports on the loopback interface.
free_ports() {
  "$PYTHON" - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
}

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Start one node in the background, in a new session (its own process group).
# $1: node name; the rest: arguments of `ray start`.
launch_node() {
  local name="$1"; shift
  setsid "$RAY" start --block --disable-usage-stats --node-ip-address=127.0.0.1 \
    --temp-dir="$dir/ray" --num-cpus="$cpus" --resources="{\"model_slots\": $slots}" \
    --object-store-memory=$((object_store_mb * 1024 * 1024)) "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
}

# Wait until `ray start` of node $1 reports its node up, or fail with its log.
wait_node() {
  local name="$1"
  for _ in $(seq 480); do
    # `ray start --block` prints this once the node's processes are up and registered.
    grep -q "block forever" "$dir/$name.log" && return 0
    alive "$dir/$name.pid" || { cat "$dir/$name.log" >&2; die "node $name failed to start (log: $dir/$name.log)"; }
    sleep 0.25
  done
  die "node $name did not start within 120 s (log: $dir/$name.log)"
}

# Wait until the head's GCS accepts connections: worker nodes can join from then on, while the
# head still starts its dashboard.
wait_gcs() {
  for _ in $(seq 480); do
    "$PYTHON" -c "import socket, sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1).close()" "$1" \
      2>/dev/null && return 0
    alive "$dir/head.pid" || { cat "$dir/head.log" >&2; die "the head node failed to start (log: $dir/head.log)"; }
    sleep 0.25
  done
  die "the head's GCS did not come up within 120 s (log: $dir/head.log)"
}

start() {
  mkdir -p "$dir"
  for pidfile in "$dir"/*.pid; do
    alive "$pidfile" && die "a cluster is already running in $dir; stop it first"
  done
  rm -f "$dir"/*.pid
  # head: gcs, dashboard, client server, agent http, agent grpc, runtime env agent, metrics
  read -r gcs dashboard client agent agent_grpc env_agent metrics <<<"$(free_ports 7)"
  launch_node head --head --port="$gcs" --include-dashboard=true --dashboard-host=127.0.0.1 \
    --dashboard-port="$dashboard" --ray-client-server-port="$client" \
    --dashboard-agent-listen-port="$agent" --dashboard-agent-grpc-port="$agent_grpc" \
    --runtime-env-agent-port="$env_agent" --metrics-export-port="$metrics"
  wait_gcs "$gcs"
  for i in $(seq 1 "$workers"); do
    read -r agent agent_grpc env_agent metrics <<<"$(free_ports 4)"
    launch_node "worker$i" --address="127.0.0.1:$gcs" \
      --dashboard-agent-listen-port="$agent" --dashboard-agent-grpc-port="$agent_grpc" \
      --runtime-env-agent-port="$env_agent" --metrics-export-port="$metrics"
  done
  wait_node head
  for i in $(seq 1 "$workers"); do wait_node "worker$i"; done
  echo "127.0.0.1:$gcs" >"$dir/address"
  echo "http://127.0.0.1:$dashboard" >"$dir/dashboard"
  echo "Ray cluster up: 1 head + $workers worker node(s), $cpus CPUs and $slots model_slots each"
  echo "  GCS address (ray.init, speech --address):  $(cat "$dir/address")"
  echo "  dashboard / Jobs API (ray job submit):      $(cat "$dir/dashboard")"
  echo "  logs: $dir/ray/session_latest/logs    stop: $0 stop --dir $dir"
}

stop() {
  local pidfile pids=()
  for pidfile in "$dir"/*.pid; do
    alive "$pidfile" && pids+=("$(cat "$pidfile")")
  done
  # SIGTERM to each `ray start --block` process only (not its group): it drains its node and
  # then stops the node's processes itself. Signalling the whole group would also kill the GCS
  # under the draining nodes, and their drain requests would hang until they time out.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[i]}" 2>/dev/null || true; done
  for _ in $(seq 180); do
    local left=0 pid
    for pid in "${pids[@]}"; do
      pgrep -g "$pid" >/dev/null && left=1
    done
    [[ $left -eq 0 ]] && break
    sleep 0.25
  done
  for pid in "${pids[@]}"; do
    if pgrep -g "$pid" >/dev/null; then
      echo "local-cluster.sh: process group $pid did not stop on SIGTERM; sending SIGKILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
  done
  rm -f "$dir"/*.pid "$dir/address" "$dir/dashboard"
  echo "stopped ${#pids[@]} node(s); logs kept in $dir"
}

case "$command" in
  start) start ;;
  stop) stop ;;
  status) [[ -f "$dir/address" ]] || die "no cluster in $dir"; "$RAY" status --address="$(cat "$dir/address")" ;;
  *) echo "usage: $0 start|status|stop [--workers N] [--cpus N] [--slots N] [--object-store-mb MB] [--dir DIR]" >&2; exit 2 ;;
esac
