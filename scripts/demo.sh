#!/usr/bin/env bash
# Loads the generated guild of the bundled fake Discord server into a data
# directory, through the same code path used against Discord, indexes it with
# all-MiniLM-L6-v2, shows the status, then asks a question (as the operator
# and as a member without roles, whose permissions come from the fake server).
# It builds what it runs first (the first build: 15 to 50 minutes on 2 cores).
# Usage: scripts/demo.sh [DATA_DIR]   (default: data/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/demo}
scripts/fetch-model.sh all-MiniLM-L6-v2
# Everything the demo runs, built by one cargo command: discord-indexer and
# the fake Discord server (its own package), so that their shared dependencies
# are built once. Cargo's progress is shown: a first build is long.
TARGET=${CARGO_TARGET_DIR:-target}
if [ -x "$TARGET/release/discord-indexer" ] && [ -x "$TARGET/release/fake-discord" ]; then
  echo "Building discord-indexer and the fake Discord server (release) if their sources changed:" \
    "seconds when nothing did, a few minutes after a change."
else
  echo "Building discord-indexer and the fake Discord server (release). The first build compiles every" \
    "dependency: 15 to 50 minutes on 2 cores (less with more), about 6 GB under $TARGET/."
fi
cargo build --release -p discord-indexer -p fake-discord --bins
echo "Built. The demo itself takes about a minute: load 3,000 messages, index them, ask twice."
BIN=$TARGET/release/discord-indexer
FAKE_BIN=$TARGET/release/fake-discord
INFO=$(mktemp)
"$FAKE_BIN" --full-cast --channels 3 --messages 1000 --per-route 5 --window-ms 250 > "$INFO" &
FAKE=$!
trap 'kill -INT $FAKE 2>/dev/null || true; rm -f "$INFO"' EXIT
for _ in $(seq 1 100); do [ -s "$INFO" ] && break; sleep 0.1; done
field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$INFO" "$1"; }
export DISCORD_API_BASE=$(field base_url) DISCORD_TOKEN=$(field token)
"$BIN" load --guild "$(field guild_id)" --data-dir "$DATA"
"$BIN" index --guild "$(field guild_id)" --data-dir "$DATA" --activate
"$BIN" status --data-dir "$DATA"
echo
echo "== Search 1 of 2: as the operator (every stored channel) =="
"$BIN" ask "how do we rotate the notary keys?" --guild "$(field guild_id)" --data-dir "$DATA" --limit 3
MEMBER=$(field plain_member_id 2>/dev/null || true)
if [ -n "$MEMBER" ]; then
  echo "== Search 2 of 2: the same question as a member without roles (only what they may read) =="
  "$BIN" ask "how do we rotate the notary keys?" --guild "$(field guild_id)" --data-dir "$DATA" --limit 3 --as-user "$MEMBER"
fi
