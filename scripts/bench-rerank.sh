#!/usr/bin/env bash
# What a cross-encoder reranker costs per question, against its peer: imports a
# DiscordChatExporter dataset (default ../shared/komodo-dev), indexes it with
# all-MiniLM-L6-v2, then for each of its questions times `ask` (hybrid, 5
# results) without and with reranking the first 30, and the cross-encoder
# alone on those 30 chunks; then sentence-transformers' CrossEncoder (PyTorch,
# CPU) scores the same pairs, timed the same way, and its scores are compared
# with ours.
#
# No reranker's weights can be downloaded here, so the one measured is made
# locally: all-MiniLM-L6-v2's encoder under a randomly initialised
# classification head, the shape of ms-marco-MiniLM-L6-v2 (6 layers, 384
# wide, 512 tokens). Its scores mean nothing; its cost is the real one's.
# With RERANKER_DIR=DIR, a real cross-encoder directory is measured instead.
#
# Usage: scripts/bench-rerank.sh [--quick] [DATASET]
#   RERANK=N: chunks reranked (30); PRECISION=int8: the cross-encoder in int8
#   --quick: one channel of the dataset (notary-nodes-notarynode, 4,000
#   messages) is imported and indexed; the questions are the same (their
#   answers need not be in it: the cost is what is measured)
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = --quick ]; then QUICK=1; shift; fi
DATASET=${1:-../shared/komodo-dev}
[ -f "$DATASET/queries.tsv" ] || { echo "no queries.tsv in $DATASET" >&2; exit 2; }
PY=$(scripts/torch-venv.sh)
scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
cargo build --release --quiet -p discord-indexer -p fake-discord --bins --examples
BIN=target/release/discord-indexer
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/models"
ln -s "$PWD/models/all-MiniLM-L6-v2" "$WORK/models/all-MiniLM-L6-v2"
if [ -n "${RERANKER_DIR:-}" ]; then
  ln -s "$(cd "$RERANKER_DIR" && pwd)" "$WORK/models/bench-reranker"
else
  HF_HUB_OFFLINE=1 "$PY" - "$PWD/models/all-MiniLM-L6-v2" "$WORK/models/bench-reranker" <<'PY' 2>/dev/null
import sys, torch
from transformers import AutoTokenizer, BertForSequenceClassification
torch.manual_seed(0)
model = BertForSequenceClassification.from_pretrained(sys.argv[1], num_labels=1)
model.save_pretrained(sys.argv[2], safe_serialization=True)
tok = AutoTokenizer.from_pretrained(sys.argv[1])
tok.model_max_length = 512
tok.save_pretrained(sys.argv[2])
PY
fi
IMPORT=$DATASET
if [ "$QUICK" = 1 ]; then
  mkdir -p "$WORK/dataset" && cp -r "$DATASET/notary-nodes-notarynode" "$WORK/dataset/"
  IMPORT=$WORK/dataset
fi
"$BIN" import "$IMPORT" --guild-name dataset --data-dir "$WORK/data" --json > /dev/null
GUILD=$("$BIN" guilds --json --data-dir "$WORK/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["guild_id"])')
DISCORD_INDEXER_MODELS_DIR="$WORK/models" "$BIN" index --guild "$GUILD" --model all-MiniLM-L6-v2 --activate \
  --data-dir "$WORK/data" --json > /dev/null
echo "== ours (CPU encoder, ${PRECISION:-f32})"
target/release/examples/bench_rerank "$WORK/data" "$WORK/models" "$DATASET/queries.tsv" "$GUILD" bench-reranker "$WORK/pairs.json"
echo "== peer: sentence-transformers CrossEncoder (PyTorch, CPU, $(nproc) cores)"
HF_HUB_OFFLINE=1 "$PY" - "$WORK/pairs.json" "$WORK/models/bench-reranker" <<'PY' 2>/dev/null
import json, sys, time
import torch
from sentence_transformers import CrossEncoder
pairs = json.load(open(sys.argv[1]))
model = CrossEncoder(sys.argv[2], device="cpu", max_length=512, activation_fn=torch.nn.Identity())
model.predict([(pairs[0]["question"], t) for t in pairs[0]["texts"]], batch_size=32)
times, worst = [], 0.0
for p in pairs:
    batch = [(p["question"], t) for t in p["texts"]]
    start = time.perf_counter()
    scores = model.predict(batch, batch_size=32)
    times.append((time.perf_counter() - start) * 1000)
    worst = max([worst] + [abs(float(a) - b) for a, b in zip(scores, p["scores"])])
times.sort()
pick = lambda q: times[round((len(times) - 1) * q)]
print(f"{'CrossEncoder.predict, same pairs, batch 32':<44} p50 {pick(0.5):>7.1f} ms   p95 {pick(0.95):>7.1f} ms   ({len(times)} questions)")
print(f"largest difference between its scores and ours: {worst:.2e}")
PY
