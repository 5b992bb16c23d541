#!/usr/bin/env bash
# The GPU path on a machine with an NVIDIA GPU, in a few minutes:
#  1. parity: this project's vectors on the GPU, in f32, f16 and bf16, against
#     sentence-transformers' reference vectors (tests/fixtures/minilm-reference.json)
#     and against sentence-transformers on the same GPU for every benchmark text;
#  2. throughput: chunks/s and tokens/s on the GPU, ours against
#     sentence-transformers (PyTorch) on the same GPU and texts, in the same run;
#  3. the whole of stage two (`index`) on the GPU over 100k generated messages,
#     in f32 and f16: wall time, chunks/s, tokens/s, peak memory.
#
# By default it builds everything itself (scripts/cuda-toolkit.sh, then
# `cargo build --release --features cuda`), fetches all-MiniLM-L6-v2 and cuts
# chunk texts from a generated archive. Prebuilt pieces can be given instead:
#   BIN=path/to/bench_embed (a --features cuda build)  MODEL=model dir
#   TEXTS=chunk texts (JSON lines)  PY=python with torch and sentence-transformers
#   INDEXER=discord-indexer and FAKE=fake-discord binaries (a --features cuda build)
#   REPEAT=passes over the texts per timing (default 10)
#   PARTS=which of "parity throughput stage-two" to run (default all three)
# Usage: scripts/gpu-check.sh
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
REPEAT=${REPEAT:-10}
PARTS=${PARTS:-parity throughput stage-two}
part() { case " $PARTS " in *" $1 "*) return 0;; *) return 1;; esac; }

if [ -z "${BIN:-}" ]; then
  toolkit=$(scripts/cuda-toolkit.sh)
  eval "$toolkit"
  cargo build --release --quiet --features discord-indexer/cuda -p discord-indexer -p fake-discord --bins --examples
  BIN=target/release/examples/bench_embed
fi
INDEXER=${INDEXER:-target/release/discord-indexer}
FAKE=${FAKE:-target/release/fake-discord}
if [ -z "${MODEL:-}" ]; then
  scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
  MODEL=models/all-MiniLM-L6-v2
fi
if [ -z "${PY:-}" ]; then
  if [ -x .bench-venv/bin/python ]; then PY=.bench-venv/bin/python; else PY=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

# The CUDA libraries the build links (cuBLAS, cuRAND, NVRTC, the runtime):
# from the system's toolkit, this project's .cuda/, or PyTorch's own wheels.
ldd "$BIN" > "$WORK/ldd.txt"
if grep -q "not found" "$WORK/ldd.txt"; then
  for dir in /usr/local/nvidia/lib64 /usr/local/cuda/lib64 "$PWD/.cuda/toolkit/lib" \
             $("$PY" -c 'import nvidia, os; [print(os.path.join(p, d, "lib")) for p in nvidia.__path__ for d in os.listdir(p)]' 2>/dev/null); do
    if [ -d "$dir" ]; then LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
  done
  export LD_LIBRARY_PATH
fi
if ldd "$BIN" "$INDEXER" | grep "not found"; then
  echo "the CUDA libraries above are missing: install CUDA 13 or set LD_LIBRARY_PATH" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true

# A loaded archive of CHANNELS × MESSAGES generated messages in $WORK/$3; prints the guild.
archive() {
  "$FAKE" --channels "$1" --messages "$2" --per-route 100000 --global 100000 > "$WORK/fake-$3.json" 2>/dev/null &
  local fake=$! info="$WORK/fake-$3.json"
  for _ in $(seq 1 600); do [ -s "$info" ] && break; sleep 0.1; done
  [ -s "$info" ] || { echo "the fake Discord server did not start" >&2; return 1; }
  field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$info" "$1"; }
  printf '[load]\nrequests_per_second = 100000\n' > "$WORK/load.toml"
  DISCORD_API_BASE=$(field base_url) DISCORD_TOKEN=$(field token) "$INDEXER" \
    --config "$WORK/load.toml" load --guild "$(field guild_id)" --data-dir "$WORK/$3" --json > /dev/null
  kill $fake 2>/dev/null || true
  field guild_id
}
if [ -z "${TEXTS:-}" ] && { part parity || part throughput; }; then
  # 2,000 chunk texts of a generated archive, as scripts/bench-index.sh cuts them.
  archive 10 2000 texts-data > /dev/null
  "$BIN" --cpu "$WORK/texts-data" "$MODEL" 2000 "$WORK/texts.jsonl" 8 > /dev/null
  TEXTS=$WORK/texts.jsonl
fi

if part parity; then
echo "== parity"
python3 -c 'import json,sys; [print(json.dumps(t)) for t in json.load(open(sys.argv[1]))["texts"]]' \
  tests/fixtures/minilm-reference.json > "$WORK/reference.jsonl"
for p in f32 f16 bf16; do
  "$BIN" --precision $p --vectors "$WORK/ref-$p.jsonl" --texts "$WORK/reference.jsonl" "$MODEL" > /dev/null
  "$BIN" --precision $p --vectors "$WORK/ours-$p.jsonl" --texts "$TEXTS" "$MODEL" > /dev/null
done
"$PY" scripts/bench-embed.py "$MODEL" "$TEXTS" 64 --device cuda --vectors "$WORK/st-f32.jsonl" > /dev/null
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
load = lambda p: [json.loads(l) for l in open(p)]
ref = json.load(open("tests/fixtures/minilm-reference.json"))["vectors"]
st = load(f"{w}/st-f32.jsonl")
bad = False
for p, limit in (("f32", 1e-3), ("f16", 1e-2), ("bf16", 1e-2)):
    mine = load(f"{w}/ref-{p}.jsonl")
    ours = load(f"{w}/ours-{p}.jsonl")
    assert len(mine) == len(ref) and len(ours) == len(st), f"{p}: vectors missing"
    d_ref = max(abs(a - b) for u, v in zip(mine, ref) for a, b in zip(u, v))
    d_st = max(abs(a - b) for u, v in zip(ours, st) for a, b in zip(u, v))
    cos = min(sum(a * b for a, b in zip(u, v)) for u, v in zip(ours, st))
    nan = any(x != x for v in ours + mine for x in v)
    ok = d_ref <= limit and d_st <= limit and not nan
    bad |= not ok
    print(f"{p:5} reference texts: max |diff| {d_ref:.1e}   {len(ours)} chunk texts vs sentence-transformers "
          f"(GPU, f32): max |diff| {d_st:.1e}, min cosine {cos:.6f}   limit {limit:.0e}: {'ok' if ok else 'FAIL'}")
sys.exit(1 if bad else 0)
PY
fi

if part throughput; then
echo "== throughput ($REPEAT passes over $(wc -l < "$TEXTS") chunk texts)"
mkdir -p "$WORK/bench"
for run in "f32 64" "f32 256" "f16 256" "bf16 256" "f16 512"; do
  set -- $run
  "$BIN" --precision "$1" --repeat "$REPEAT" --texts "$TEXTS" "$MODEL" "$2" > "$WORK/bench/ours-$1-$2.json"
done
for run in "f32 32" "f32 256" "f16 256" "bf16 256"; do
  set -- $run
  "$PY" scripts/bench-embed.py "$MODEL" "$TEXTS" "$2" --device cuda --dtype "$1" --repeat "$REPEAT" > "$WORK/bench/st-$1-$2.json"
done
python3 - "$WORK" <<'PY'
import glob, json, os, sys
rows = [json.load(open(p)) for p in sorted(glob.glob(f"{sys.argv[1]}/bench/*.json"))]
for r in rows:
    name = "ours" if r["embedder"] == "candle" else "sentence-transformers"
    print(f"{name:22} {r['precision']:5} batch {r['batch']:4}  {r['chunks_per_second']:9.0f} chunks/s "
          f"{r['tokens_per_second']:11.0f} tokens/s")
for p in ("f32", "f16", "bf16"):
    ours = [r for r in rows if r["embedder"] == "candle" and r["precision"] == p]
    st = [r for r in rows if r["embedder"] != "candle" and r["precision"] == p]
    if ours and st:
        o = max(ours, key=lambda r: r["chunks_per_second"]); s = max(st, key=lambda r: r["chunks_per_second"])
        print(f"{p}: ours (batch {o['batch']}) / the better sentence-transformers (batch {s['batch']}): "
              f"{o['chunks_per_second'] / s['chunks_per_second']:.2f}x")
PY
fi

if part stage-two; then
  echo "== whole stage two on the GPU: 100,000 messages, embedded store"
  GUILD=$(archive 10 10000 data)
  [ -n "$GUILD" ] || { echo "loading the generated archive failed" >&2; exit 1; }
  cp -r "$WORK/data" "$WORK/data-f16"
  MODEL_DIR=$(realpath "$MODEL")
  for p in f32 f16; do
    d=$WORK/data; [ $p = f16 ] && d=$WORK/data-f16
    printf '[index]\nmodel = "%s"\nmodels_dir = "%s"\nprecision = "%s"\n' "$(basename "$MODEL_DIR")" "$(dirname "$MODEL_DIR")" $p > "$WORK/index.toml"
    python3 - "$INDEXER" "$WORK/index.toml" "$d" "$GUILD" $p <<'PY'
import json, resource, subprocess, sys, time
binary, config, data, guild, p = sys.argv[1:]
t = time.time()
out = subprocess.run([binary, "--config", config, "--data-dir", data, "index", "--guild", guild, "--json"],
                     capture_output=True, check=True)
wall = time.time() - t
s = json.loads(out.stdout)[0]
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"{p}: {s['messages']} messages -> {s['chunks']} chunks, {s['points']} points ({s['indexed_vectors']} in HNSW), "
      f"{s['tokens']} tokens on {s['device']} ({s['precision']}); {wall:.1f} s wall, "
      f"{s['embedded'] / wall:.0f} chunks/s, {s['tokens'] / wall:.0f} tokens/s, peak RSS {peak:.0f} MiB")
t = s["timings"]
print(f"      run {s['seconds']:.1f} s: waited for vectors {t['waiting']:.1f} s (embedding jobs {t['embedding']:.1f} s), "
      f"storing {t['storing']:.1f} s, finishing {t['finishing']:.1f} s, "
      f"the rest (reading, chunking, bookkeeping) {s['seconds'] - t['waiting'] - t['storing'] - t['finishing']:.1f} s")
PY
  done
fi
