#!/usr/bin/env bash
# Retrieval quality on real chat: imports a DiscordChatExporter dataset, indexes
# it, asks every question of its queries.tsv and prints R@1, R@5, R@10 and
# MRR@10 for vector, keyword and hybrid search (overall and per kind of
# question), the index size (points per message), stage-two time per message
# and ask latency.
# Usage: scripts/eval-retrieval.sh [DATASET] [MODEL] [CONFIG]
#   DATASET: a folder of DCE exports with a queries.tsv (default ../shared/komodo-dev)
#   MODEL:   a model under models/ (default all-MiniLM-L6-v2)
#   CONFIG:  a discord-indexer.toml with the [index] settings to evaluate
# With RERANKER=NAME (a cross-encoder under models/, e.g. one that
# `scripts/fetch-model.sh ms-marco-MiniLM-L6-v2` installs), every search's first
# results are reranked by it ([search] rerank_candidates: 30); compare with a
# run without it for what it gains on the dataset.
# With ADAPT=1, MODEL is first adapted to the imported archive
# (`discord-indexer adapt`, into models/MODEL-eval-adapted, replaced each run)
# and the adapted model is evaluated; ADAPT_SEED (0) and ADAPT_EPOCHS (1) pass
# through.
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET=${1:-../shared/komodo-dev}
MODEL=${2:-all-MiniLM-L6-v2}
CONFIG=${3:-}
[ -f "$DATASET/queries.tsv" ] || { echo "no queries.tsv in $DATASET" >&2; exit 2; }
scripts/fetch-model.sh "$MODEL" >/dev/null
# One build for both packages (the same invocation as the other benchmarks).
cargo build --release --quiet -p discord-indexer -p fake-discord --bins --examples
BIN=target/release/discord-indexer
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cfg=()
[ -n "$CONFIG" ] && cfg=(--config "$CONFIG")

"$BIN" "${cfg[@]}" import "$DATASET" --guild-name dataset --data-dir "$WORK/data" --json > "$WORK/import.json"
GUILD=$("$BIN" guilds --json --data-dir "$WORK/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["guild_id"])')
now() { python3 -c "import time; print(time.time())"; }
if [ "${ADAPT:-0}" = 1 ]; then
  ADAPTED="$MODEL-eval-adapted"
  rm -rf "models/$ADAPTED"
  astart=$(now)
  "$BIN" "${cfg[@]}" adapt --guild "$GUILD" --name "$ADAPTED" --base "$MODEL" --data-dir "$WORK/data" \
    --seed "${ADAPT_SEED:-0}" --epochs "${ADAPT_EPOCHS:-1}" --json > "$WORK/adapt.json"
  echo "adapted $MODEL to the archive in $(python3 -c "print(round($(now) - $astart))") s: $(cat "$WORK/adapt.json")"
  MODEL=$ADAPTED
fi
start=$(now)
"$BIN" "${cfg[@]}" index --guild "$GUILD" --model "$MODEL" --activate --data-dir "$WORK/data" --json > "$WORK/index.json"
end=$(now)
messages=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["new"])' "$WORK/import.json")
echo "== $DATASET: $messages messages, model $MODEL${CONFIG:+, settings $CONFIG}"
python3 -c 'import sys; s,m=float(sys.argv[1]),int(sys.argv[2]); print(f"stage two: {s:.1f} s, {1000*s/m:.2f} ms per message")' "$(python3 -c "print($end - $start)")" "$messages"
target/release/examples/eval_retrieval "$WORK/data" models "$DATASET/queries.tsv" "$GUILD"
