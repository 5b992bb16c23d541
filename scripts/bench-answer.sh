#!/usr/bin/env bash
# Answer figures, in one run on one machine:
#  1. the embedded chat model (a GGUF file run in process through candle:
#     examples/bench_answer.rs) against llama.cpp (llama-cpp-python, built by
#     scripts/setup-llama-server.sh; scripts/bench_answer_llamacpp.py) on the
#     same GGUF file, the same thread count and the same prompt token ids:
#     prompt-processing and generation tokens/s, medians over several runs,
#     greedy, the same number of generated tokens. Ours is measured as
#     gguf::load runs a model by default (our int8 forward pass on a CPU,
#     with the best kernel the CPU has; in a full run also with the AVX2
#     kernel when the best is AVX-512 VNNI), and through candle's models with
#     F32 weights and with the weights as the file stores them;
#  2. the whole `discord-indexer ask --answer` time split into retrieval,
#     model load (concurrent with retrieval), prompt and generation, on the
#     komodo-dev chat archive imported and indexed with all-MiniLM-L6-v2.
# The prompts are built as `ask --answer` builds them (rules, chat messages of
# the dataset quoted as numbered sources, the question), about 500 and 1500
# tokens. The last line is `llama.cpp: N.NNx`: our generation tokens/s (the
# default, int8) over llama.cpp's, the geometric mean over the prompt sizes;
# the lines before it give the same for candle's models.
#
# Usage: scripts/bench-answer.sh [--quick]
#   --quick: a ~500-token prompt only, 64 tokens generated, 2 timed runs, one
#            channel of the dataset, 2 questions (a few minutes on 2 cores)
# Environment:
#   THREADS  threads on both sides (default: nproc): RAYON_NUM_THREADS for
#            ours (the int8 products and candle's kernels run on rayon's
#            pool), n_threads and n_threads_batch for llama.cpp
#   MODEL    the GGUF file (default models/SmolLM2-135M-Instruct.Q4_1.gguf,
#            installed by scripts/fetch-model.sh smollm2)
#   DATASET  a DiscordChatExporter CSV dataset with queries.tsv
#            (default ../shared/komodo-dev)
# Timings share the CPU with whatever else runs (llama.cpp's OpenMP threads
# suffer most when a core is taken): the 1-minute load average before the
# start is printed; compare figures taken on an idle machine. The raw results
# (JSON) are kept in target/bench-answer/ (under $CARGO_TARGET_DIR when set).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
case "${1:-}" in
  --quick) QUICK=1 ;;
  "") ;;
  *) echo "usage: scripts/bench-answer.sh [--quick]" >&2; exit 2 ;;
esac
THREADS=${THREADS:-$(nproc)}
MODEL=${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
DATASET=${DATASET:-../shared/komodo-dev}
if [ "$QUICK" = 1 ]; then
  SIZES=500 GEN=64 RUNS=2 WARMUP=1 ASKS=2 CHANNELS=notary-nodes-notarynode
else
  SIZES=500,1500 GEN=128 RUNS=3 WARMUP=1 ASKS=5 CHANNELS=
fi
[ -f "$DATASET/queries.tsv" ] || { echo "bench-answer: no queries.tsv in $DATASET (set DATASET)" >&2; exit 2; }
if [ "$MODEL" = models/SmolLM2-135M-Instruct.Q4_1.gguf ]; then
  scripts/fetch-model.sh smollm2 >/dev/null
fi
[ -f "$MODEL" ] || { echo "bench-answer: no model file $MODEL" >&2; exit 2; }
scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
LLAMA_PY=$(scripts/setup-llama-server.sh)
# The first release build takes 15 to 50 minutes on 2 cores.
cargo build --release --quiet --bin discord-indexer --example bench_answer
TARGET=${CARGO_TARGET_DIR:-target}
BIN=$TARGET/release/discord-indexer
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STARTED=$(date +%s)
load() { cut -d' ' -f1 /proc/loadavg; }

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
echo "== answers: $(basename "$MODEL"), $THREADS threads, $(nproc) cores ($cpu), $( [ "$QUICK" = 1 ] && echo quick || echo full) run;" \
  "load average before the start $(load)"

echo "== 1a. embedded model (int8; candle with F32 and with the stored weights), prompts of ~${SIZES//,/ and ~} tokens, $GEN generated, median of $RUNS runs"
RAYON_NUM_THREADS=$THREADS "$TARGET/release/examples/bench_answer" --model "$MODEL" --format all \
  --sizes "$SIZES" --gen "$GEN" --runs "$RUNS" --warmup "$WARMUP" --chat "$DATASET" \
  --tokens-dir "$WORK/prompts" > "$WORK/ours.json"
# CPUs without AVX-512 VNNI run the AVX2 kernel: measured here too (full run).
: > "$WORK/ours-avx2.json"
if [ "$QUICK" = 0 ] && grep -q avx512_vnni /proc/cpuinfo && grep -qw avx2 /proc/cpuinfo; then
  RAYON_NUM_THREADS=$THREADS "$TARGET/release/examples/bench_answer" --model "$MODEL" --format int8 \
    --int8-kernel avx2 --sizes "$SIZES" --gen "$GEN" --runs "$RUNS" --warmup "$WARMUP" --chat "$DATASET" \
    > "$WORK/ours-avx2.json"
fi

# llama.cpp writes exactly as many tokens as ours did (ours stops at an end of turn).
GEN_FOR=()
while read -r size n; do GEN_FOR+=(--gen-for "$size=$n"); done < <(python3 -c '
import json, sys
for p in json.load(open(sys.argv[1]))["formats"][0]["prompts"]:
    print(p["size"], max(p["generated_tokens"], 2))' "$WORK/ours.json")
echo "== 1b. llama.cpp (llama-cpp-python), the same prompt tokens"
"$LLAMA_PY" scripts/bench_answer_llamacpp.py --model "$MODEL" --threads "$THREADS" --tokens-dir "$WORK/prompts" \
  --gen "$GEN" "${GEN_FOR[@]}" --runs "$RUNS" --warmup "$WARMUP" > "$WORK/llama.json"

echo "== 2. discord-indexer ask --answer on $DATASET${CHANNELS:+ (#$CHANNELS)}, $ASKS questions"
if [ -n "$CHANNELS" ]; then
  mkdir -p "$WORK/dataset"
  for c in $CHANNELS; do cp -r "$DATASET/$c" "$WORK/dataset/"; done
  IMPORT="$WORK/dataset"
else
  IMPORT=$DATASET
fi
"$BIN" import "$IMPORT" --guild-name dataset --data-dir "$WORK/data" --json > "$WORK/import.json"
GUILD=$("$BIN" guilds --json --data-dir "$WORK/data" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["guild_id"])')
t0=$(date +%s)
RAYON_NUM_THREADS=$THREADS "$BIN" index --guild "$GUILD" --model all-MiniLM-L6-v2 --activate --data-dir "$WORK/data" \
  --json > "$WORK/index.json"
echo "imported and indexed $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["new"])' "$WORK/import.json") messages (index: $(($(date +%s) - t0)) s)"
# The questions of the imported channels, spread over the kinds (paraphrase, keyword, support).
python3 - "$DATASET/queries.tsv" "$ASKS" "$CHANNELS" > "$WORK/questions.txt" <<'PY'
import sys
path, n, channels = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
rows = [l.rstrip("\n").split("\t") for l in open(path, encoding="utf-8") if not l.startswith("#")]
rows = [r for r in rows if len(r) >= 2 and (not channels or r[1] in channels)]
step = max(1, len(rows) // n)
for r in rows[::step][:n]:
    print(r[0])
PY
: > "$WORK/asks.jsonl"
while IFS= read -r question; do
  a0=$(python3 -c 'import time; print(time.time())')
  RAYON_NUM_THREADS=$THREADS "$BIN" ask "$question" --answer --chat-model "$MODEL" --guild "$GUILD" \
    --data-dir "$WORK/data" --json > "$WORK/ask.json" 2> "$WORK/ask.err" || {
    echo "ask --answer failed:" >&2; cat "$WORK/ask.err" >&2; exit 1; }
  a1=$(python3 -c 'import time; print(time.time())')
  python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
t = d["timings"]; t["wall_ms"] = (float(sys.argv[3]) - float(sys.argv[2])) * 1e3
t["question"] = sys.argv[4]; t["finish"] = d["answer"]["finish"]; t["found"] = d["answer"]["found"]
print(json.dumps(t))' "$WORK/ask.json" "$a0" "$a1" "$question" >> "$WORK/asks.jsonl"
done < "$WORK/questions.txt"

mkdir -p "$TARGET/bench-answer"
cp "$WORK/ours.json" "$WORK/llama.json" "$WORK/asks.jsonl" "$TARGET/bench-answer/"
cp "$WORK/ours-avx2.json" "$TARGET/bench-answer/"
python3 - "$WORK/ours.json" "$WORK/llama.json" "$WORK/asks.jsonl" "$(($(date +%s) - STARTED))" "$TARGET" \
  "$WORK/ours-avx2.json" <<'PY'
import json, math, statistics, sys
ours = json.load(open(sys.argv[1]))
avx2 = open(sys.argv[6]).read().strip()
if avx2:
    for f in json.loads(avx2)["formats"]:
        f["requested"] = "int8-avx2"
        ours["formats"].insert(1, f)
llama = json.load(open(sys.argv[2]))
asks = [json.loads(l) for l in open(sys.argv[3]) if l.strip()]
elapsed, target = int(sys.argv[4]), sys.argv[5]
theirs = {p["size"]: p for p in llama["prompts"]}

print(f"== results: {ours['model']} ({ours['quantization']}, {ours['parameters'] / 1e6:.0f}M parameters), "
      f"{ours['threads']} threads both sides; llama.cpp {llama['llama_cpp_python']} (n_batch {llama['n_batch']}, "
      f"n_ubatch {llama['n_ubatch']}); medians of {ours['runs']} runs")
print(f"{'':28} {'prompt':>7} {'gen':>5} {'prompt tok/s':>13} {'gen tok/s':>10} {'first token ms':>15}")
ratios = {}
for p in llama["prompts"]:
    print(f"{'llama.cpp':28} {p['prompt_tokens']:>7} {p['generated_tokens']:>5} {p['prompt_tokens_per_s']:>13.1f} "
          f"{p['tokens_per_s']:>10.1f} {p['first_token_ms']:>15.0f}")
    print(f"{'  (its own counters)':28} {'':>7} {'':>5} {p['llama_perf_prompt_tokens_per_s'] or 0:>13.1f} "
          f"{p['llama_perf_tokens_per_s'] or 0:>10.1f}"
          + ("" if p["tokenization_matches"] else "   (llama.cpp tokenizes the text differently; our ids were fed)"))
labels = {"auto": "default", "quantized": "as stored", "int8-avx2": "AVX2 kernel"}
for f in ours["formats"]:
    kernel = f" {f['int8_kernel']}" if f.get("int8_kernel") and f["requested"] == "auto" else ""
    label = f"ours, {f['format']}{kernel} ({labels.get(f['requested'], 'candle')})"
    gen_r, prompt_r = [], []
    for p in f["prompts"]:
        t = theirs[p["size"]]
        gen_r.append(p["tokens_per_s"] / t["tokens_per_s"])
        prompt_r.append(p["prompt_tokens_per_s"] / t["prompt_tokens_per_s"])
        print(f"{label:28} {p['prompt_tokens']:>7} {p['generated_tokens']:>5} {p['prompt_tokens_per_s']:>13.1f} "
              f"{p['tokens_per_s']:>10.1f} {p['first_token_ms']:>15.0f}   "
              f"x llama.cpp: prompt {prompt_r[-1]:.2f}x, gen {gen_r[-1]:.2f}x")
    geo = lambda v: math.exp(sum(map(math.log, v)) / len(v))
    ratios[f["requested"]] = (geo(gen_r), geo(prompt_r), f["format"], f["load_ms"])
# Whether the int8 weights write what candle's F32 weights write (greedy, same prompt).
texts = {f["requested"]: [p["runs"][0].get("text", "") for p in f["prompts"]] for f in ours["formats"]}
if "f32" in texts:
    same = []
    for a, b in zip(texts["auto"], texts["f32"]):
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        same.append("the same answer" if a == b else f"the same first {n} of {max(len(a), len(b))} characters")
    print(f"answers written by the default and by candle's F32 weights: {'; '.join(same)} (per prompt)")

print(f"== ask --answer ({len(asks)} questions; ms, median [min-max]; model load runs alongside retrieval)")
def span(key):
    v = [a[key] for a in asks]
    return f"{statistics.median(v):8.0f} [{min(v):.0f}-{max(v):.0f}]"
for a in asks:
    a["prompt_ms"] = a["first_token_ms"]
    a["generate_ms"] = a["generation_ms"] - a["first_token_ms"]
    a["other_ms"] = a["wall_ms"] - max(a["retrieval_ms"], a["model_load_ms"]) - a["generation_ms"]
for key, label in [("wall_ms", "whole command (wall)"), ("retrieval_ms", "retrieval"),
                   ("model_load_ms", "chat model load"), ("prompt_ms", "prompt (to first token)"),
                   ("generate_ms", "generation (after it)"),
                   ("other_ms", "rest (start, answer check)")]:
    print(f"  {label:26} {span(key)}")
print(f"  prompt tokens {statistics.median(a['prompt_tokens'] for a in asks):.0f}, generated tokens "
      f"{statistics.median(a['generated_tokens'] for a in asks):.0f}, prompt {statistics.median(a['prompt_tokens_per_s'] for a in asks):.1f} tok/s, "
      f"generation {statistics.median(a['tokens_per_s'] for a in asks):.1f} tok/s (medians); "
      f"answers found {sum(a['found'] for a in asks)}/{len(asks)}")
print(f"== took {elapsed} s (raw results in {target}/bench-answer/)")
a = ratios["auto"]
others = [(k, ratios[k]) for k in ("int8-avx2", "f32", "quantized") if k in ratios]
names = {"int8-avx2": "int8, AVX2 kernel", "f32": "candle, F32 weights", "quantized": "candle, quantized weights as stored"}
print(f"prompt processing over llama.cpp's: {a[1]:.2f}x ({a[2]}, the default)"
      + "".join(f", {r[1]:.2f}x ({names[k]})" for k, r in others))
for k, r in others:
    print(f"llama.cpp, {names[k]}: {r[0]:.2f}x")
print(f"llama.cpp: {a[0]:.2f}x")
PY
