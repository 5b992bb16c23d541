#!/usr/bin/env bash
# Search figures:
#  1. `ask` latency (permissions + embedding + vector search + keyword search +
#     fusion), p50/p99 over 200 questions, with 10k and 1M points (and 30k and
#     3M messages) in the embedded store, as the operator and as a member who
#     may read 80% of the channels (examples/bench_ask.rs says how the data is made);
#  2. recall@5 and recall@1 of vector-only, keyword-only and hybrid search on
#     the retrieval fixture (tests/fixtures/retrieval.json).
# Usage: scripts/bench-ask.sh [N ...]   (default: 10000 1000000)
# Built stores are kept under target/bench-ask/N (about 6 GB for 1M points).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
cargo build --release --quiet --example bench_ask
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(10000 1000000)
mkdir -p target/bench-ask
for n in "${sizes[@]}"; do
  echo "== ask latency, $n points, $(nproc) cores"
  target/release/examples/bench_ask "$n" "target/bench-ask/$n" models 200 | tee "target/bench-ask/$n.json"
  python3 - "target/bench-ask/$n.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"first ask (loads the model, opens the collection): {r['first_ask_ms']:.0f} ms")
for k in ["hybrid_operator", "hybrid_member", "vector_member", "keyword_member"]:
    s = r[k]
    print(f"{k:16} p50 {s['p50_ms']:6.1f} ms  p99 {s['p99_ms']:6.1f} ms  "
          f"(p50: embed {s['p50_embed_ms']:.1f}, vector {s['p50_vector_ms']:.1f}, keyword {s['p50_keyword_ms']:.1f}, fuse {s['p50_fuse_ms']:.1f})")
PY
done
echo "== retrieval on the fixture (all-MiniLM-L6-v2)"
REQUIRE_MODELS=1 cargo test --quiet --test tests search::known_questions_find_their_conversations -- --nocapture 2>&1 \
  | grep -E "^recall|missed"
