#!/usr/bin/env bash
# Stage-one figures, measured against the loopback fake Discord server:
#  1. load throughput with realistic limits (5 requests per 1 s window per
#     channel, 50 requests/s global) for 1, 4 and 16 channels, as a fraction
#     of the bound those limits allow, and the 429s provoked;
#  2. archive write throughput on 1M generated messages;
#  3. peak memory of loading one channel of 100k and of 1M messages.
# Usage: scripts/bench-load.sh [--quick]   (quick: smaller sizes, for a smoke run)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=${1:-}
PER_CHANNEL=10000; STORE_N=1000000; BIG=1000000
if [ "$QUICK" = "--quick" ]; then PER_CHANNEL=1000; STORE_N=50000; BIG=100000; fi

# One build for both packages, so that their shared dependencies are built once.
cargo build --release --quiet -p discord-indexer -p fake-discord --bins --examples
BIN=target/release/discord-indexer
FAKE_BIN=target/release/fake-discord
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# Starts the fake server with the given arguments; sets BASE, TOKEN, GUILD, FAKE_PID.
start_fake() {
  "$FAKE_BIN" "$@" > "$WORK/fake.json" 2> "$WORK/fake.err" &
  FAKE_PID=$!
  for _ in $(seq 1 600); do [ -s "$WORK/fake.json" ] && break; sleep 0.1; done
  BASE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base_url"])' "$WORK/fake.json")
  TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["token"])' "$WORK/fake.json")
  GUILD=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["guild_id"])' "$WORK/fake.json")
}

stop_fake() {
  kill -INT "$FAKE_PID"; wait "$FAKE_PID" 2>/dev/null || true
}

echo "== load throughput (5 req / 1 s per channel, 50 req/s global, 100 messages a page)"
echo "(whole run: from start to exit, discovery included; steady: message pages between the 2nd second and"
echo " 2 s before the last page, where every channel is still loading)"
printf '%-9s %-10s %-8s %-8s %-8s %-10s %-8s %-10s %s\n' channels messages seconds msgs/s bound/s "of bound" "req/s" "steady" "429s provoked"
for N in 1 4 16; do
  start_fake --channels "$N" --messages "$PER_CHANNEL" --per-route 5 --window-ms 1000 --global 50 \
    --request-log "$WORK/requests.jsonl"
  rm -rf "$WORK/data"
  DISCORD_TOKEN="$TOKEN" DISCORD_API_BASE="$BASE" "$BIN" load --guild "$GUILD" --concurrency "$N" \
    --data-dir "$WORK/data" --json > "$WORK/summary.json"
  stop_fake
  python3 - "$WORK/summary.json" "$WORK/fake.err" "$N" "$WORK/requests.jsonl" <<'PY'
import json, re, sys
s = json.load(open(sys.argv[1])); n = int(sys.argv[3])
pages = [r["at_ms"] for r in map(json.loads, open(sys.argv[4])) if r["path"].endswith("/messages")]
lo, hi = pages[0] + 2000, pages[-1] - 2000
steady_pages = sum(1 for t in pages if lo <= t < hi) / ((hi - lo) / 1000)
provoked = re.search(r"(\d+) of them 429s", open(sys.argv[2]).read()).group(1)
# The bound: pages per second the limits allow, 100 messages a page.
bound = min(n * 5 / 1.0, 50) * 100
rate = s["new"] / s["seconds"]
reqs = s["requests"]["requests"] / s["seconds"]
steady = steady_pages * 100 / bound
print(f'{n:<9} {s["new"]:<10} {s["seconds"]:<8.1f} {rate:<8.0f} {bound:<8.0f} {rate/bound:<10.1%} {reqs:<8.1f} {steady:<10.1%} {provoked}')
PY
done

echo
echo "== archive write path ($STORE_N messages, pages of 100, one transaction each)"
target/release/examples/bench_store "$STORE_N" "$WORK/store"

echo
echo "== peak memory of a one-channel load (limits lifted on both sides)"
printf '[load]\nrequests_per_second = 100000\n' > "$WORK/unlimited.toml"
for M in $((BIG / 10)) "$BIG"; do
  start_fake --channels 1 --messages "$M" --per-route 100000 --window-ms 1000 --global 100000
  rm -rf "$WORK/data"; cp "$WORK/unlimited.toml" "$WORK/data.toml"
  python3 - "$BIN" "$BASE" "$TOKEN" "$GUILD" "$WORK/data" "$M" <<'PY'
import json, os, resource, subprocess, sys, time
binary, base, token, guild, data, m = sys.argv[1:]
env = dict(os.environ, DISCORD_TOKEN=token, DISCORD_API_BASE=base)
t = time.time()
out = subprocess.run([binary, "load", "--guild", guild, "--data-dir", data, "--json", "--config", data + ".toml"],
                     env=env, capture_output=True, check=True)
elapsed = time.time() - t
s = json.loads(out.stdout)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{int(m):>8} messages: peak RSS {peak:.1f} MiB, {elapsed:.1f} s, {s['new'] / elapsed:.0f} messages/s end to end")
PY
  stop_fake
done
