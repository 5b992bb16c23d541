#!/usr/bin/env bash
# Stage-two figures:
#  1. embedding throughput (chunks/s, tokens/s) of all-MiniLM-L6-v2 with candle
#     (this project, F32 and int8) and with sentence-transformers (PyTorch, CPU),
#     on the same chunk texts, in the same run; int8's lowest cosine to F32;
#  2. the whole of stage two on 100k real-looking messages, F32 and int8: wall
#     time, ms per message, peak memory, points written.
# Needs PyTorch: installs torch and sentence-transformers into .bench-venv/
# from PyPI on first use (about 2.5 GB: PyPI's torch wheels carry CUDA libraries).
# Usage: scripts/bench-index.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/.."
TEXTS_N=2000; MESSAGES=10000; CHANNELS=10
if [ "${1:-}" = "--quick" ]; then TEXTS_N=200; MESSAGES=1000; fi

scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
MODEL=models/all-MiniLM-L6-v2
PY=$(scripts/torch-venv.sh)
# One build for both packages, so that their shared dependencies are built once.
cargo build --release --quiet -p discord-indexer -p fake-discord --bins --examples
BIN=target/release/discord-indexer
FAKE_BIN=target/release/fake-discord
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

# A loaded archive of CHANNELS × MESSAGES generated messages.
"$FAKE_BIN" --channels "$CHANNELS" --messages "$MESSAGES" --per-route 100000 --global 100000 > "$WORK/fake.json" 2>/dev/null &
for _ in $(seq 1 600); do [ -s "$WORK/fake.json" ] && break; sleep 0.1; done
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/fake.json" "$1"; }
printf '[load]\nrequests_per_second = 100000\n' > "$WORK/config.toml"
DISCORD_API_BASE=$(field base_url) DISCORD_TOKEN=$(field token) "$BIN" --config "$WORK/config.toml" \
  load --guild "$(field guild_id)" --data-dir "$WORK/data" --json > /dev/null
GUILD=$(field guild_id)

echo "== embedding throughput, all-MiniLM-L6-v2, $TEXTS_N chunk texts, $(nproc) cores"
# Ours at its default batch (64 texts, at most ~8k tokens) and at 8; sentence-transformers at 8 and at its default (32).
target/release/examples/bench_embed --vectors "$WORK/f32.vectors" "$WORK/data" "$MODEL" "$TEXTS_N" "$WORK/texts.jsonl" 64 > "$WORK/candle64.json"
target/release/examples/bench_embed "$WORK/data" "$MODEL" "$TEXTS_N" "$WORK/texts.jsonl" 8 > "$WORK/candle8.json"
target/release/examples/bench_embed --precision int8 --vectors "$WORK/int8.vectors" --texts "$WORK/texts.jsonl" "$MODEL" 64 > "$WORK/int8.json"
HF_HUB_OFFLINE=1 "$PY" scripts/bench-embed.py "$MODEL" "$WORK/texts.jsonl" 8 2>/dev/null > "$WORK/st8.json"
HF_HUB_OFFLINE=1 "$PY" scripts/bench-embed.py "$MODEL" "$WORK/texts.jsonl" 32 2>/dev/null > "$WORK/st32.json"
python3 - "$WORK" <<'PY'
import json, sys
r = {n: json.load(open(f"{sys.argv[1]}/{n}.json")) for n in ("candle64", "candle8", "st8", "st32")}
for n, label in (("candle64", "ours, batch 64"), ("candle8", "ours, batch 8"),
                 ("st8", "sentence-transformers, batch 8"), ("st32", "sentence-transformers, batch 32")):
    print(f"{label:34} {r[n]['chunks_per_second']:7.1f} chunks/s {r[n]['tokens_per_second']:8.0f} tokens/s")
r["int8"] = json.load(open(f"{sys.argv[1]}/int8.json"))
print(f"{'ours, int8, batch 64':34} {r['int8']['chunks_per_second']:7.1f} chunks/s {r['int8']['tokens_per_second']:8.0f} tokens/s")
best = max(r["st8"], r["st32"], key=lambda x: x["chunks_per_second"])
print(f"ours / the better sentence-transformers (batch {best['batch']}): "
      f"{r['candle64']['chunks_per_second'] / best['chunks_per_second']:.2f}x")
vectors = lambda n: [json.loads(l) for l in open(f"{sys.argv[1]}/{n}.vectors")]
cosines = [sum(a * b for a, b in zip(u, v)) for u, v in zip(vectors("f32"), vectors("int8"))]
print(f"int8 lowest cosine to f32 over {len(cosines)} texts: {min(cosines):.4f} (mean {sum(cosines) / len(cosines):.4f})")
print(f"int8 / the better sentence-transformers (batch {best['batch']}): "
      f"{r['int8']['chunks_per_second'] / best['chunks_per_second']:.2f}x")
PY

echo
echo "== whole stage two: $((CHANNELS * MESSAGES)) messages, embedded store, f32 then int8 (a rebuild)"
printf '[index]\nprecision = "int8"\n' > "$WORK/int8.toml"
python3 - "$BIN" "$WORK/data" "$GUILD" "$WORK/candle64.json" "$WORK/int8.toml" <<'PY'
import json, os, resource, subprocess, sys, time
binary, data, guild, forward, int8_config = sys.argv[1:]
for precision, extra in (("f32", []), ("int8", ["--config", int8_config])):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.time()
    args = [binary, *extra, "--data-dir", data, "index", "--guild", guild, "--json"]
    out = subprocess.run(args + (["--rebuild"] if precision == "int8" else []), capture_output=True, check=True)
    wall = time.time() - t
    s = json.loads(out.stdout)[0]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{precision}: {s['messages']} messages -> {s['chunks']} chunks, {s['points']} points "
          f"({s['indexed_vectors']} in HNSW), {s['tokens']} tokens; {wall:.1f} s wall, "
          f"{1000 * wall / s['messages']:.2f} ms/message, {s['embedded'] / wall:.1f} chunks/s, "
          f"peak RSS {peak:.0f} MiB{'' if precision == 'f32' else ' (the larger of both runs)'}")
    if precision == "f32":
        pure = json.load(open(forward))["tokens_per_second"]
        print(f"f32: whole stage two at {s['tokens'] / wall / pure:.2f} of the pure forward rate "
              f"({s['tokens'] / wall:.0f} vs {pure:.0f} tokens/s)")
PY
