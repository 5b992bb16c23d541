#!/usr/bin/env bash
# Loads the generated guild of the bundled fake Discord server into a data
# directory, through the same code path used against Discord, indexes it with
# all-MiniLM-L6-v2, shows the status, then asks a question (as the operator
# and as a member without roles, whose permissions come from the fake server). Usage: scripts/demo.sh [DATA_DIR]
# (default: data/demo)
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/demo}
scripts/fetch-model.sh all-MiniLM-L6-v2
# One build for both packages, so that their shared dependencies are built once
# (an existing build is reused: this takes seconds when nothing changed).
cargo build --release --quiet -p discord-indexer -p fake-discord --bins
BIN=target/release/discord-indexer
FAKE_BIN=target/release/fake-discord
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
