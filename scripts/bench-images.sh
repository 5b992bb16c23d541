#!/usr/bin/env bash
# Image figures: a generated guild where 5% of messages carry an image
# (screenshots with text, photos, and a few broken, lying or oversized files),
# served by the fake server's CDN on loopback.
#  1. attachment download throughput (load's second half: files/s, MB/s);
#  2. OCR images/s in stage two and its share of stage two's time
#     (all-MiniLM-L6-v2 on the CPU, default settings);
#  3. the peer, on the same image files in the same run: the tesseract command
#     once per image (what pytesseract does), one at a time and one per core.
# Usage: scripts/bench-images.sh [--quick]   (--quick: 2 channels x 1000 messages)
set -euo pipefail
cd "$(dirname "$0")/.."
CHANNELS=10; MESSAGES=2000; SHARE=0.05
if [ "${1:-}" = "--quick" ]; then CHANNELS=2; MESSAGES=1000; fi
scripts/setup-ocr.sh >/dev/null
scripts/fetch-model.sh all-MiniLM-L6-v2 >/dev/null
cargo build --release --quiet -p discord-indexer -p fake-discord --bins --examples
BIN=target/release/discord-indexer
FAKE_BIN=target/release/fake-discord
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

"$FAKE_BIN" --channels "$CHANNELS" --messages "$MESSAGES" --image-share "$SHARE" \
  --per-route 100000 --global 100000 > "$WORK/fake.json" 2>/dev/null &
for _ in $(seq 1 600); do [ -s "$WORK/fake.json" ] && break; sleep 0.1; done
[ -s "$WORK/fake.json" ] || { echo "the fake server did not start" >&2; exit 1; }
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/fake.json" "$1"; }
GUILD=$(field guild_id)
printf '[load]\nrequests_per_second = 100000\n' > "$WORK/config.toml"
DISCORD_API_BASE=$(field base_url) DISCORD_TOKEN=$(field token) "$BIN" --config "$WORK/config.toml" \
  load --guild "$GUILD" --data-dir "$WORK/data" --json > "$WORK/load.json"
/usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" index --guild "$GUILD" --data-dir "$WORK/data" --json > "$WORK/index.json"

echo "== $((CHANNELS * MESSAGES)) messages, ${SHARE} of them with an image, $(nproc) cores, $(tesseract --version 2>&1 | head -1)"
python3 - "$WORK/load.json" "$WORK/index.json" "$WORK/time" <<'PY'
import json, sys
load = json.load(open(sys.argv[1])); f = load["files"]
index = json.load(open(sys.argv[2]))[0]; i = index["images"]
secs, rss = open(sys.argv[3]).read().split()
print(f"download: {f['stored']} files stored, {f['bytes']/1e6:.1f} MB in {f['seconds']:.2f}s: "
      f"{f['stored']/f['seconds']:.0f} files/s, {f['bytes']/1e6/f['seconds']:.1f} MB/s "
      f"(not stored: {f['too_large']} too large, {f['broken']} broken, {f['not_image']} not images)")
print(f"stage two: {index['seconds']:.1f}s for {index['messages']} messages, peak RSS {int(rss)/1024:.0f} MiB")
print(f"  OCR: {i['read']} images ({i['with_text']} with text, {i['undecodable']} not decodable) in {i['seconds']:.1f}s: "
      f"{i['read']/i['seconds']:.1f} images/s, {100*i['seconds']/index['seconds']:.0f}% of stage two")
PY

# The peer: the tesseract command once per stored image file.
find "$WORK/data/attachments" -type f -not -path "$WORK/data/attachments/tmp/*" > "$WORK/files"
N=$(wc -l < "$WORK/files")
start=$(date +%s.%N)
while read -r f; do OMP_THREAD_LIMIT=1 tesseract "$f" - >/dev/null 2>&1 || true; done < "$WORK/files"
one=$(python3 -c "import sys,time; print(time.time() - float(sys.argv[1]))" "$start")
start=$(date +%s.%N)
xargs -P "$(nproc)" -I{} sh -c 'OMP_THREAD_LIMIT=1 tesseract "{}" - >/dev/null 2>&1 || true' < "$WORK/files"
all=$(python3 -c "import sys,time; print(time.time() - float(sys.argv[1]))" "$start")
python3 - "$N" "$one" "$all" "$(nproc)" <<'PY'
import sys
n, one, par, cores = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
print(f"peer: tesseract command per image, {n} files: {n/one:.1f} images/s one at a time, {n/par:.1f} images/s {cores} at a time")
PY
