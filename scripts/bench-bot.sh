#!/usr/bin/env bash
# Bot figures, against the loopback fake Discord server (gateway + REST):
#  1. live capture latency: gateway MESSAGE_CREATE → row in SQLite, p50/p99
#     over messages posted one at a time;
#  2. a burst of messages posted at once: how many per second are stored;
#  3. DM /ask latency: INTERACTION_CREATE → the answer the bot sends back
#     (permissions + embedding with all-MiniLM-L6-v2 + hybrid search + reply).
# Usage: scripts/bench-bot.sh [MESSAGES] [BURST] [ASKS]   (default: 200 2000 50)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
cargo build --release --quiet --example bench_bot
target/release/examples/bench_bot models "${1:-200}" "${2:-2000}" "${3:-50}" | tee target/bench-bot.json
python3 - target/bench-bot.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c, b, a = r["capture"], r["burst"], r["ask"]
print(f"{r['cores']} cores, {r['archive_messages']} messages in the archive")
print(f"live capture (event -> SQLite): p50 {c['p50_ms']:.1f} ms  p99 {c['p99_ms']:.1f} ms  max {c['max_ms']:.1f} ms  ({c['n']} messages)")
print(f"burst: {b['stored']}/{b['messages']} stored in {b['seconds']:.2f} s = {b['per_second']:.0f} messages/s")
print(f"DM /ask (interaction -> answer): p50 {a['p50_ms']:.1f} ms  p99 {a['p99_ms']:.1f} ms  ({a['n']} questions)")
PY
