#!/usr/bin/env bash
# Adapting a model to an archive: `discord-indexer adapt` against the same
# training in sentence-transformers on PyTorch (scripts/adapt-peer.py), same
# archive, same settings (1 epoch, batch 32, learning rate 2e-5, 64 tokens),
# in the same run. Prints each one's pairs, steps, seconds and loss.
# Usage: [PAIRS=N] scripts/bench-adapt.sh [DATASET] [BASE_MODEL]
#   PAIRS:      train both on at most N pairs (default 20000, the CLI's default)
#   DATASET:    a folder of DCE exports (default ../shared/komodo-dev)
#   BASE_MODEL: a model under models/ (default all-MiniLM-L6-v2)
# Installs torch and sentence-transformers into .bench-venv/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-../shared/komodo-dev}
BASE=${2:-all-MiniLM-L6-v2}
scripts/fetch-model.sh "$BASE" >/dev/null
cargo build --release --quiet -p discord-indexer
BIN=target/release/discord-indexer
PY=$(scripts/torch-venv.sh)
WORK=$(mktemp -d)
NAME="bench-adapt-$$"
trap 'rm -rf "$WORK" "models/$NAME"' EXIT
"$BIN" import "$DATASET" --guild-name dataset --data-dir "$WORK/data" --json > /dev/null
GUILD=$("$BIN" guilds --json --data-dir "$WORK/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["guild_id"])')
echo "== $DATASET, base $BASE, $(nproc) cores"
/usr/bin/time -f "ours: %e s wall, %M KB peak" "$BIN" adapt --guild "$GUILD" --name "$NAME" --base "$BASE" \
  --data-dir "$WORK/data" --max-pairs "${PAIRS:-20000}" --json > "$WORK/ours.json" 2> "$WORK/ours.err" || { cat "$WORK/ours.err" >&2; exit 1; }
tail -1 "$WORK/ours.err"
summary() { python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); print("%s: %d pairs, %d steps, %.0f s training, loss %.3f -> %.3f" % (sys.argv[1], r["pairs"], r.get("steps", r["pairs"] // 32), r["seconds"], r["loss_first_tenth"], r["loss_last_tenth"]))' "$@"; }
summary ours "$WORK/ours.json"
HF_HUB_OFFLINE=1 ADAPT_MAX_PAIRS="${PAIRS:-20000}" /usr/bin/time -f "peer: %e s wall, %M KB peak" "$PY" scripts/adapt-peer.py "$WORK/data/archive.db" "$GUILD" "models/$BASE" "$WORK/peer" \
  > "$WORK/peer.json" 2> "$WORK/peer.err" || { cat "$WORK/peer.err" >&2; exit 1; }
tail -1 "$WORK/peer.err"
summary peer "$WORK/peer.json"
