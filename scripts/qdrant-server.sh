#!/usr/bin/env bash
# A local Qdrant server (or a cluster of them) on loopback, for tests and
# measurements: free ports, data in a temporary folder, telemetry off. It waits
# until every node answers, then runs COMMAND with the server in its
# environment and stops the nodes when COMMAND ends (or, without a COMMAND,
# when you press Ctrl-C), removing their data.
#
# Usage: scripts/qdrant-server.sh [--nodes N] [--check] [--optional] [-- COMMAND [ARGS...]]
#   --nodes N   a cluster of N nodes (peer-to-peer on loopback) instead of one
#   --check     only say which binary would run (exit 0) or why none can (exit 2)
#   --optional  without a binary, say so and run COMMAND without a server
#               (the tests that need one then report SKIPPED)
#
# COMMAND gets:
#   QDRANT_URL       the first node's gRPC URL (what discord-indexer talks)
#   QDRANT_HTTP_URL  the first node's REST URL
#   QDRANT_BIN       the server binary (tests start servers of their own with it)
#   QDRANT_NODES     every node as pid:grpc_port:http_port, space-separated
# and its exit status is the script's.
#
# The binary: $QDRANT_BIN, else ../shared/qdrant/qdrant beside the checkout,
# else `qdrant` on the PATH. Qdrant's own release binaries and container image
# work the same way (https://qdrant.tech/documentation/guides/installation/).
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=1
CHECK=0
OPTIONAL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES=${2:?--nodes N}; shift 2 ;;
    --check) CHECK=1; shift ;;
    --optional) OPTIONAL=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "qdrant-server: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$NODES" in ''|*[!0-9]*|0) echo "qdrant-server: --nodes takes a number from 1" >&2; exit 2 ;; esac

find_binary() {
  if [ -n "${QDRANT_BIN:-}" ]; then
    [ -x "$QDRANT_BIN" ] || { echo "qdrant-server: QDRANT_BIN=$QDRANT_BIN is not an executable file" >&2; return 2; }
    echo "$QDRANT_BIN"
  elif [ -x ../shared/qdrant/qdrant ]; then
    (cd ../shared/qdrant && echo "$PWD/qdrant")
  elif command -v qdrant >/dev/null 2>&1; then
    command -v qdrant
  else
    echo "qdrant-server: no Qdrant server binary: set QDRANT_BIN to one (a release from" \
      "https://github.com/qdrant/qdrant/releases, or built from source), or put it on the PATH" >&2
    return 2
  fi
}
if ! BIN=$(find_binary); then
  if [ "$OPTIONAL" = 1 ] && [ "$CHECK" = 0 ] && [ $# -gt 0 ]; then
    echo "qdrant-server: running without a Qdrant server: $*" >&2
    exec "$@"
  fi
  exit 2
fi
if [ "$CHECK" = 1 ]; then
  echo "$BIN"
  exit 0
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/qdrant-server.XXXXXX")
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap stop EXIT
trap 'exit 130' INT TERM

# Free loopback ports (bound and let go: another program could take one in
# between, which the start below would then report).
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
read -r -a PORTS <<< "$(free_ports $((NODES * 3)))"

# HTTP GET through python3 (needed anyway), so curl is not.
get() { python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1" 2>/dev/null; }
ready() { get "http://127.0.0.1:$1/readyz" >/dev/null; }
NODE_LIST=()
for ((i = 0; i < NODES; i++)); do
  http=${PORTS[$((i * 3))]} grpc=${PORTS[$((i * 3 + 1))]} p2p=${PORTS[$((i * 3 + 2))]}
  dir=$WORK/node$i
  mkdir -p "$dir"
  args=()
  cluster=false
  if [ "$NODES" -gt 1 ]; then
    cluster=true
    args=(--uri "http://127.0.0.1:$p2p")
    [ "$i" -gt 0 ] && args+=(--bootstrap "http://127.0.0.1:${PORTS[2]}")
  fi
  # Its own working directory: no config/config.yaml is picked up by chance.
  (cd "$dir" && exec env QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT="$http" \
    QDRANT__SERVICE__GRPC_PORT="$grpc" QDRANT__STORAGE__STORAGE_PATH="$dir/storage" \
    QDRANT__STORAGE__SNAPSHOTS_PATH="$dir/snapshots" QDRANT__TELEMETRY_DISABLED=true \
    QDRANT__CLUSTER__ENABLED=$cluster QDRANT__CLUSTER__P2P__PORT="$p2p" QDRANT__LOG_LEVEL=WARN \
    "$BIN" "${args[@]}") > "$dir/log" 2>&1 &
  PIDS+=($!)
  NODE_LIST+=("$!:$grpc:$http")
  # Each node answers before the next joins (the first must lead the cluster).
  for _ in $(seq 1 300); do
    ready "$http" && break
    kill -0 "${PIDS[$i]}" 2>/dev/null || { echo "qdrant-server: node $i exited; its log:" >&2; cat "$dir/log" >&2; exit 2; }
    sleep 0.1
  done
  ready "$http" || { echo "qdrant-server: node $i did not answer in 30 s; its log:" >&2; cat "$dir/log" >&2; exit 2; }
done
if [ "$NODES" -gt 1 ]; then
  # Every peer known to the first node, and a leader elected.
  for _ in $(seq 1 300); do
    peers=$(get "http://127.0.0.1:${PORTS[0]}/cluster" | python3 -c '
import json, sys
r = json.load(sys.stdin)["result"]
print(len(r["peers"]) if r.get("raft_info", {}).get("leader") else 0)' 2>/dev/null || echo 0)
    [ "$peers" = "$NODES" ] && break
    sleep 0.1
  done
  [ "$peers" = "$NODES" ] || { echo "qdrant-server: the cluster has $peers of $NODES peers after 30 s" >&2; exit 2; }
fi

export QDRANT_URL="http://127.0.0.1:${PORTS[1]}" QDRANT_HTTP_URL="http://127.0.0.1:${PORTS[0]}" QDRANT_BIN="$BIN"
export QDRANT_NODES="${NODE_LIST[*]}"
echo "qdrant-server: $NODES node(s) of $("$BIN" --version 2>/dev/null | head -1 || echo qdrant) ready: QDRANT_URL=$QDRANT_URL" >&2
if [ $# -eq 0 ]; then
  echo "qdrant-server: Ctrl-C stops it" >&2
  wait "${PIDS[0]}"
else
  set +e
  "$@"
  status=$?
  set -e
  exit "$status"
fi
