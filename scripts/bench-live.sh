#!/usr/bin/env bash
# Live indexing through the bot, against the loopback fake Discord server
# (examples/bench_live.rs): messages posted at a steady RATE a second for
# STEADY seconds (with a deletion every two seconds), then BURST at once;
# for each, the time from the gateway event to the first vector-mode DM
# /ask that finds it, and for each deletion, to the first that no longer
# does. Also the embedding work per change, /ask latency meanwhile, and the
# process's memory. The model is all-MiniLM-L6-v2 on this machine's CPU.
#
# Usage: scripts/bench-live.sh [--quick]
#   --quick  30 seconds steady and a burst of 1,000 (a few minutes)
# Environment: RATE (20), STEADY (180), BURST (5000), DATASET (default
# ../shared/komodo-dev: real chat, whose lines of 60 to 300 characters are
# the messages posted).
# The last two lines are `live p95: N s` and `delete p95: N s`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --quick ]; then
  STEADY=${STEADY:-30} BURST=${BURST:-1000}
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/bench-live.sh [--quick]" >&2; exit 2
fi
RATE=${RATE:-20} STEADY=${STEADY:-180} BURST=${BURST:-5000}
scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
# The first release build takes 15 to 50 minutes on 2 cores.
cargo build --release --quiet --example bench_live
OUT=$PWD/${CARGO_TARGET_DIR:-target}/bench-live.json
DATASET=${DATASET:-../shared/komodo-dev}
LINES=$PWD/${CARGO_TARGET_DIR:-target}/bench-live-lines.txt
python3 - "$DATASET" "$LINES" <<'PY'
import csv, glob, random, sys
seen, out = set(), []
for path in sorted(glob.glob(f"{sys.argv[1]}/*/*.csv")):
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter=";"):
            text = " ".join(row[3].split()) if len(row) > 3 else ""
            if 60 <= len(text) <= 300 and text not in seen and not text.startswith("http"):
                seen.add(text)
                out.append(text)
if not out:
    sys.exit(f"bench-live: no chat lines in {sys.argv[1]} (set DATASET)")
random.Random(7).shuffle(out)
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(out) + "\n")
PY
echo "== live indexing: $RATE messages/s for ${STEADY}s, then $BURST at once; $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
"$PWD/${CARGO_TARGET_DIR:-target}/release/examples/bench_live" models "$RATE" "$STEADY" "$BURST" "$LINES" | tee "$OUT"
python3 - "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, d, w, b, m = r["steady"], r["deletes"]["latency"], r["work"], r["burst"], r["memory_mb"]
l = s["latency"]
print(f"{r['cores']} cores, {r['model']}, a live run {r['live_delay_ms']} ms after a change; {r['archive_messages']} messages archived before")
print(f"steady {r['rate_per_s']:.0f}/s, {s['messages']} messages: found by vector /ask after p50 {l['p50_s']:.1f} s, p95 {l['p95_s']:.1f} s, max {l['max_s']:.1f} s")
print(f"  /ask meanwhile: p50 {s['ask']['p50_s']*1000:.0f} ms, p95 {s['ask']['p95_s']*1000:.0f} ms ({s['ask']['n']} asks)")
print(f"  work per change: {w['tokens_per_change']:.0f} tokens, {w['chunks_per_change']:.2f} chunks, {w['run_s_per_change']*1000:.1f} ms of indexing runs")
print(f"deletions ({d['n']}): gone from vector /ask after p50 {d['p50_s']:.1f} s, p95 {d['p95_s']:.1f} s, max {d['max_s']:.1f} s")
bl = b["latency"]
print(f"burst of {b['messages']} (posted in {b['posting_s']:.1f} s): all searchable after {b['all_searchable_s']:.1f} s; "
      f"its runs of stage two took {b['run_s']:.1f} s ({b['chunks']:.0f} chunks); per message p50 {bl['p50_s']:.1f} s, p95 {bl['p95_s']:.1f} s")
print(f"  /ask during the burst: p50 {b['ask']['p50_s']*1000:.0f} ms, p95 {b['ask']['p95_s']*1000:.0f} ms ({b['ask']['n']} asks)")
print(f"memory (bot + fake server, one process): {m['start']:.0f} MB at start, {m['after_steady']:.0f} MB after the steady phase, "
      f"{m['peak_during_burst']:.0f} MB peak in the burst")
print(f"check: {r['sample']['found']} of {r['sample']['asked']} messages asked for one by one were found")
print(f"live p95: {l['p95_s']:.1f} s")
print(f"delete p95: {d['p95_s']:.1f} s")
PY
