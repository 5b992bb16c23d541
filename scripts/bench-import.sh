#!/usr/bin/env bash
# Import figures: DiscordChatExporter JSON exports of 100k and 1M messages
# (written by the fake server's DCE writer, in DCE's exact format), each
# imported into an empty archive: messages/s and peak memory. Flat memory
# means the 1M import peaks about where the 100k one does.
# Usage: scripts/bench-import.sh [--quick]   (--quick: 20k and 200k)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="100000 1000000"
if [ "${1:-}" = "--quick" ]; then SIZES="20000 200000"; fi
# One build for both packages (the same invocation as the other benchmarks).
cargo build --release --quiet -p discord-indexer -p fake-discord --bins --examples
BIN=target/release/discord-indexer
FAKE_BIN=target/release/fake-discord
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== import of one DCE JSON export into an empty archive, $(nproc) cores"
printf '%-10s %10s %10s %12s %14s\n' messages "file MB" seconds "messages/s" "peak RSS MiB"
for n in $SIZES; do
  "$FAKE_BIN" --channels 1 --messages "$n" --write-dce-json "$WORK/export-$n.json"
  mb=$(( $(stat -c %s "$WORK/export-$n.json") / 1048576 ))
  /usr/bin/time -f '%e %M' -o "$WORK/time" "$BIN" import "$WORK/export-$n.json" --data-dir "$WORK/data-$n" --json > "$WORK/summary.json"
  read -r secs rss_kb < "$WORK/time"
  new=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["new"])' "$WORK/summary.json")
  [ "$new" = "$n" ] || { echo "imported $new of $n messages" >&2; exit 1; }
  python3 -c 'import sys; n,s,kb,mb=int(sys.argv[1]),float(sys.argv[2]),int(sys.argv[3]),sys.argv[4]; print(f"{n:<10} {mb:>10} {s:>10.1f} {n/s:>12,.0f} {kb/1024:>14.0f}")' "$n" "$secs" "$rss_kb" "$mb"
  rm -rf "$WORK/data-$n" "$WORK/export-$n.json"
done
