#!/usr/bin/env bash
# Reruns stage two for every loaded guild (or the listed ones) with one model,
# activating each index when it completes. Prints one JSON line per guild:
#   {"guild": "...", "model": "...", "chunks": N, "parts": N, "points": N, "seconds": S, "status": "ok"}
#   {"guild": "...", "model": "...", "status": "failed", "exit": C, "error": "..."}
# and exits non-zero if any guild failed. It drives only the CLI's own
# subcommands (`guilds --json`, `index --json`), so a script of yours can too.
#
# Usage: scripts/reprocess.sh --model NAME [--guild ID ...] [--keep-going]
#                             [--data-dir DIR] [--config FILE]
# The binary: $DISCORD_INDEXER_BIN, else target/release/discord-indexer, else `cargo run --release`.
set -uo pipefail
cd "$(dirname "$0")/.."

MODEL=""; GUILDS=(); KEEP_GOING=0; GLOBAL=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=${2:?--model needs a name}; shift 2 ;;
    --guild) GUILDS+=("${2:?--guild needs an id}"); shift 2 ;;
    --keep-going) KEEP_GOING=1; shift ;;
    --data-dir|--config) GLOBAL+=("$1" "${2:?$1 needs a value}"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "reprocess.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$MODEL" ] || { echo "reprocess.sh: --model NAME is required" >&2; exit 2; }

if [ -n "${DISCORD_INDEXER_BIN:-}" ]; then BIN=("$DISCORD_INDEXER_BIN")
elif [ -x target/release/discord-indexer ]; then BIN=(target/release/discord-indexer)
else BIN=(cargo run --release --quiet --); fi

if [ ${#GUILDS[@]} -eq 0 ]; then
  if ! LIST=$("${BIN[@]}" "${GLOBAL[@]}" guilds --json); then
    echo "reprocess.sh: could not list the loaded guilds" >&2; exit 2
  fi
  mapfile -t GUILDS < <(printf '%s' "$LIST" | python3 -c 'import json,sys; [print(g["guild_id"]) for g in json.load(sys.stdin)]')
fi

FAILED=0
ERR=$(mktemp); trap 'rm -f "$ERR"' EXIT
for G in "${GUILDS[@]}"; do
  START=$(date +%s.%N)
  OUT=$("${BIN[@]}" "${GLOBAL[@]}" index --json --guild "$G" --model "$MODEL" --activate 2>"$ERR")
  CODE=$?
  SECONDS_TAKEN=$(python3 -c "import sys; print(round($(date +%s.%N) - $START, 2))")
  if [ $CODE -eq 0 ]; then
    printf '%s' "$OUT" | python3 -c '
import json, sys
s = json.load(sys.stdin)[0]
print(json.dumps({"guild": s["guild_id"], "model": s["model"], "chunks": s["chunks"], "parts": s["parts"], "points": s["points"],
                  "seconds": float(sys.argv[1]), "status": "ok"}))' "$SECONDS_TAKEN"
  else
    FAILED=1
    python3 -c '
import json, sys
err = [l for l in open(sys.argv[4]).read().splitlines() if l.strip()]
print(json.dumps({"guild": sys.argv[1], "model": sys.argv[2], "seconds": float(sys.argv[5]), "status": "failed",
                  "exit": int(sys.argv[3]), "error": err[-1] if err else ""}))' "$G" "$MODEL" "$CODE" "$ERR" "$SECONDS_TAKEN"
    [ $KEEP_GOING -eq 1 ] || exit 1
  fi
done
exit $FAILED
