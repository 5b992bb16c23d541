#!/usr/bin/env bash
# Starts or stops llama.cpp's OpenAI-compatible chat server (llama-cpp-python,
# installed by scripts/setup-llama-server.sh on first use) in the background,
# on 127.0.0.1, for trying answers against an endpoint:
#
#   scripts/llama-server.sh start [MODEL.gguf] [PORT]   # prints the [answer] endpoint
#   scripts/llama-server.sh status
#   scripts/llama-server.sh stop
#
# MODEL defaults to models/SmolLM2-135M-Instruct.Q4_1.gguf
# (scripts/fetch-model.sh smollm2), PORT to 8080. The server takes any model
# name ([answer] endpoint_model), and a key when LLAMA_SERVER_API_KEY is set
# (point [answer] api_key_env at that variable). Its log and pid file are in
# ${XDG_CACHE_HOME:-$HOME/.cache}/discord-indexer/.
set -euo pipefail
USAGE="usage: scripts/llama-server.sh start [MODEL.gguf] [PORT] | status | stop"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
STATE=${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/discord-indexer
PIDFILE="$STATE/llama-server.pid"
LOG="$STATE/llama-server.log"

running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

case "${1:-}" in
  start)
    MODEL=${2:-$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf}
    PORT=${3:-8080}
    if running; then
      echo "llama-server.sh: already running (pid $(cat "$PIDFILE")); stop it first" >&2
      exit 1
    fi
    if [ ! -f "$MODEL" ]; then
      echo "llama-server.sh: no model at $MODEL (scripts/fetch-model.sh smollm2 installs SmolLM2)" >&2
      exit 1
    fi
    PY=$("$ROOT/scripts/setup-llama-server.sh")
    mkdir -p "$STATE"
    ARGS=(--model "$MODEL" --host 127.0.0.1 --port "$PORT" --n_ctx "${LLAMA_SERVER_N_CTX:-4096}" --verbose False)
    if [ -n "${LLAMA_SERVER_API_KEY:-}" ]; then
      ARGS+=(--api_key "$LLAMA_SERVER_API_KEY")
    fi
    nohup "$PY" -m llama_cpp.server "${ARGS[@]}" >"$LOG" 2>&1 &
    echo $! >"$PIDFILE"
    for _ in $(seq 1 300); do
      if ! running; then
        echo "llama-server.sh: the server exited; its log:" >&2
        cat "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
      fi
      # Any HTTP answer (401 included, with a key) means it is up.
      if python3 -c "import sys, urllib.request, urllib.error
try: urllib.request.urlopen('http://127.0.0.1:$PORT/v1/models', timeout=2)
except urllib.error.HTTPError: pass
except Exception: sys.exit(1)" 2>/dev/null; then
        echo "http://127.0.0.1:$PORT/v1"
        exit 0
      fi
      sleep 0.5
    done
    echo "llama-server.sh: no answer from the server after 150 s; its log: $LOG" >&2
    exit 1
    ;;
  status)
    if running; then echo "running (pid $(cat "$PIDFILE")), log $LOG"; else echo "not running"; exit 1; fi
    ;;
  stop)
    if running; then
      kill "$(cat "$PIDFILE")"
      for _ in $(seq 1 50); do running || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
    ;;
  *) echo "$USAGE" >&2; exit 2 ;;
esac
