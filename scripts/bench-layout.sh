#!/usr/bin/env bash
# The two collection layouts of a Qdrant server (`[qdrant] layout`), measured
# on a fresh local server each (scripts/qdrant-server.sh): many small guilds
# (GUILDS guilds of POINTS points) and one big guild (BIG points), each in a
# collection per guild ("per-guild") and in one shared collection with the
# guild as a tenant key ("shared"). Per run: time to create and fill, time
# for the server to settle (index), search p50/p99 of random guilds (each
# search limited to its guild), and the server's resident memory
# (examples/bench_layout.rs). Vectors are random, of DIM dimensions (384:
# all-MiniLM-L6-v2's); no model runs.
#
# Usage: scripts/bench-layout.sh [--quick]
#   --quick  200 guilds of 500 points, one guild of 50,000 (a few minutes)
# Environment: GUILDS (1000), POINTS (1000), BIG (200000), DIM (384),
# QUERIES (500), BATCH (points per upsert call, 2048: about what stage two
# hands over at once); QDRANT_BIN as for scripts/qdrant-server.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --quick ]; then
  GUILDS=${GUILDS:-200} POINTS=${POINTS:-500} BIG=${BIG:-50000}
elif [ -n "${1:-}" ]; then
  echo "usage: scripts/bench-layout.sh [--quick]" >&2; exit 2
fi
GUILDS=${GUILDS:-1000} POINTS=${POINTS:-1000} BIG=${BIG:-200000} DIM=${DIM:-384} QUERIES=${QUERIES:-500} BATCH=${BATCH:-2048}
scripts/qdrant-server.sh --check >/dev/null
cargo build --release --quiet --example bench_layout
EXAMPLE=$PWD/${CARGO_TARGET_DIR:-target}/release/examples/bench_layout
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
echo "== Qdrant layouts: $GUILDS guilds of $POINTS points, and one guild of $BIG; $DIM dimensions, $QUERIES searches;" \
  "$(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
for case in "$GUILDS $POINTS" "1 $BIG"; do
  read -r guilds points <<< "$case"
  for layout in per-guild shared; do
    scripts/qdrant-server.sh -- sh -c "\"$EXAMPLE\" --url \"\$QDRANT_URL\" --http \"\$QDRANT_HTTP_URL\" --layout $layout --guilds $guilds \
      --points $points --dim $DIM --queries $QUERIES --batch $BATCH" 2>/dev/null | tail -1 | tee -a "$OUT"
  done
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(f"{'guilds x points':>18} {'layout':>10} {'collections':>11} {'fill s':>7} {'points/s':>9} {'settle s':>8} {'indexed':>8} "
      f"{'search p50 ms':>13} {'p99 ms':>7} {'server MB':>9}")
for r in rows:
    mb = f"{r['server_rss_mb']:.0f}" if r["server_rss_mb"] is not None else "?"
    print(f"{r['guilds']:>8} x {r['points_per_guild']:<7} {r['layout']:>10} {r['collections']:>11} {r['fill_s']:>7.1f} "
          f"{r['points_per_s']:>9.0f} {r['settle_s']:>8.1f} {r['indexed_vectors']:>8} {r['search_p50_ms']:>13.1f} {r['search_p99_ms']:>7.1f} {mb:>9}")
PY
