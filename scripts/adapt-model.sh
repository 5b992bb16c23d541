#!/usr/bin/env bash
# Adapts an embedding model to one guild's archive: fine-tunes a copy of it on
# the archive's own message pairs (a reply and what it answers, or two
# consecutive messages by different people), so that search learns the
# server's vocabulary. Index with the result beside the active model, then
# switch to it: `discord-indexer index --guild GUILD --model NAME --activate`.
# Measured effect and cost: README, "Retrieval on real chat".
#
# Needs PyTorch: installs torch and sentence-transformers into .bench-venv/
# from PyPI on first use (about 2.5 GB). Reads the archive only (read-only).
# Usage: scripts/adapt-model.sh GUILD_ID NAME [DATA_DIR] [BASE_MODEL]
#   NAME:       the new model's directory under models/
#   DATA_DIR:   where archive.db is (default data)
#   BASE_MODEL: a model under models/ (default all-MiniLM-L6-v2)
set -euo pipefail
cd "$(dirname "$0")/.."
GUILD=${1:?usage: scripts/adapt-model.sh GUILD_ID NAME [DATA_DIR] [BASE_MODEL]}
NAME=${2:?usage: scripts/adapt-model.sh GUILD_ID NAME [DATA_DIR] [BASE_MODEL]}
DATA=${3:-data}
BASE=${4:-all-MiniLM-L6-v2}
case "$NAME" in
  */*|.*|"") echo "error: NAME must be a plain directory name under models/" >&2; exit 2 ;;
esac
[ -f "$DATA/archive.db" ] || { echo "error: no archive at $DATA/archive.db" >&2; exit 2; }
[ -e "models/$NAME" ] && { echo "error: models/$NAME exists; choose another NAME" >&2; exit 2; }
scripts/fetch-model.sh "$BASE" >/dev/null
PY=$(scripts/torch-venv.sh)
TMP="models/.$NAME.partial"
rm -rf "$TMP"
trap 'rm -rf "$TMP"' EXIT
HF_HUB_OFFLINE=1 "$PY" scripts/adapt-model.py "$DATA/archive.db" "$GUILD" "models/$BASE" "$TMP"
mv "$TMP" "models/$NAME"
echo "installed models/$NAME: index with --model $NAME" >&2
