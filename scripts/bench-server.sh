#!/usr/bin/env bash
# Stage two into a Qdrant server against the embedded store, on the same
# archive, model and machine, in one run: the whole `index` (wall time, points
# per second, and its own split into embedding, storing and finishing), then
# `ask` latency (vector and hybrid, p50/p99) on each. The server is started by
# scripts/qdrant-server.sh on loopback (its binary: QDRANT_BIN, or
# ../shared/qdrant/qdrant); `--nodes 3` runs against a three-node cluster with
# two copies of each shard instead.
#
# Usage: scripts/bench-server.sh [--quick] [--nodes N]
#   --quick  one channel of the dataset (4,000 messages), 20 questions
# Environment: DATASET (default ../shared/komodo-dev: a DiscordChatExporter
# CSV dataset with queries.tsv), MODEL (default all-MiniLM-L6-v2).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
NODES=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --nodes) NODES=${2:?--nodes N}; shift 2 ;;
    *) echo "usage: scripts/bench-server.sh [--quick] [--nodes N]" >&2; exit 2 ;;
  esac
done
DATASET=${DATASET:-../shared/komodo-dev}
MODEL=${MODEL:-all-MiniLM-L6-v2}
[ -f "$DATASET/queries.tsv" ] || { echo "bench-server: no queries.tsv in $DATASET (set DATASET)" >&2; exit 2; }
scripts/qdrant-server.sh --check >/dev/null
scripts/fetch-model.sh "$MODEL" >/dev/null
# The first release build takes 15 to 50 minutes on 2 cores.
cargo build --release --quiet --bin discord-indexer
BIN=$PWD/${CARGO_TARGET_DIR:-target}/release/discord-indexer
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
if [ "$QUICK" = 1 ]; then
  mkdir -p "$WORK/dataset" && cp -r "$DATASET/notary-nodes-notarynode" "$WORK/dataset/"
  IMPORT=$WORK/dataset ASKS=20
else
  IMPORT=$DATASET ASKS=100
fi
echo "== stage two into the embedded store and into a Qdrant server ($NODES node(s)): $MODEL, $(nproc) cores," \
  "load average $(cut -d' ' -f1 /proc/loadavg)"
"$BIN" import "$IMPORT" --guild-name dataset --data-dir "$WORK/edge" --json > "$WORK/import.json"
cp -r "$WORK/edge" "$WORK/server"
GUILD=$("$BIN" guilds --json --data-dir "$WORK/edge" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["guild_id"])')
python3 - "$DATASET/queries.tsv" "$ASKS" > "$WORK/questions.txt" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1], encoding="utf-8") if not l.startswith("#")]
qs = [r[0] for r in rows if r and r[0]]
n = int(sys.argv[2])
print("\n".join((qs * (n // max(1, len(qs)) + 1))[:n]))
PY
CONFIG=$WORK/cluster.toml
: > "$CONFIG"
[ "$NODES" -gt 1 ] && printf '[qdrant]\nreplication_factor = 2\n' > "$CONFIG"

# One backend's run: index, then the questions in both modes, one process each.
cat > "$WORK/run.sh" <<'SH'
#!/usr/bin/env bash
set -euo pipefail
BIN=$1 DATA=$2 GUILD=$3 MODEL=$4 QUESTIONS=$5 OUT=$6 CONFIG=$7
t0=$(date +%s.%N)
"$BIN" --config "$CONFIG" index --guild "$GUILD" --model "$MODEL" --activate --data-dir "$DATA" --json > "$OUT.index.json"
t1=$(date +%s.%N)
echo "$t0 $t1" > "$OUT.wall"
: > "$OUT.asks"
for mode in vector hybrid; do
  while IFS= read -r q; do
    a0=$(date +%s.%N)
    "$BIN" --config "$CONFIG" ask "$q" --guild "$GUILD" --mode "$mode" --data-dir "$DATA" --json > /dev/null
    a1=$(date +%s.%N)
    echo "$mode $a0 $a1" >> "$OUT.asks"
  done < "$QUESTIONS"
done
SH
chmod +x "$WORK/run.sh"
env -u QDRANT_URL "$WORK/run.sh" "$BIN" "$WORK/edge" "$GUILD" "$MODEL" "$WORK/questions.txt" "$WORK/edge" "$CONFIG"
scripts/qdrant-server.sh --nodes "$NODES" -- \
  "$WORK/run.sh" "$BIN" "$WORK/server" "$GUILD" "$MODEL" "$WORK/questions.txt" "$WORK/server" "$CONFIG"

python3 - "$WORK" "$NODES" <<'PY'
import json, sys
work, nodes = sys.argv[1], int(sys.argv[2])
def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
rows = {}
for name in ("edge", "server"):
    s = json.load(open(f"{work}/{name}.index.json"))
    s = s[0] if isinstance(s, list) else s
    t0, t1 = map(float, open(f"{work}/{name}.wall").read().split())
    asks = {}
    for line in open(f"{work}/{name}.asks"):
        mode, a0, a1 = line.split()
        asks.setdefault(mode, []).append((float(a1) - float(a0)) * 1e3)
    rows[name] = (s, t1 - t0, asks)
label = {"edge": "embedded store", "server": f"Qdrant server ({nodes} node{'s' if nodes > 1 else ''})"}
print(f"{'':28} {'points':>7} {'wall s':>7} {'points/s':>9} {'embedding':>10} {'storing':>8} {'finishing':>10}   ask (whole command) ms p50/p99: vector, hybrid")
for name, (s, wall, asks) in rows.items():
    t = s["timings"]
    print(f"{label[name]:28} {s['points']:>7} {wall:>7.1f} {s['points'] / wall:>9.1f} {t['embedding']:>10.1f} {t['storing']:>8.1f} "
          f"{t['finishing']:>10.1f}   {pct(asks['vector'], 50):.0f}/{pct(asks['vector'], 99):.0f}, "
          f"{pct(asks['hybrid'], 50):.0f}/{pct(asks['hybrid'], 99):.0f} ({len(asks['vector'])} each)")
e, r = rows["edge"], rows["server"]
assert e[0]["points"] == r[0]["points"], "both hold the same points"
print(f"server over embedded, whole stage two: {e[1] / r[1]:.2f}x the speed")
PY
