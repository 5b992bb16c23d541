#!/usr/bin/env python3
"""llama.cpp's prompt-processing and generation speed on the prompts
examples/bench_answer.rs wrote (the same token ids), for
scripts/bench-answer.sh. Runs with the python of the llama-cpp-python venv
(scripts/setup-llama-server.sh). Prints one JSON object.

  bench_answer_llamacpp.py --model GGUF --threads N --tokens-dir DIR
      [--gen 128] [--gen-for SIZE=N ...] [--runs 3] [--warmup 1]

Each run, as the embedded model's generate() does it: the prompt's tokens in
one decode call (llama.cpp splits it into micro-batches of n_ubatch), the
first token taken greedily (argmax of the last logits), then one decode call
per token, greedily, for exactly the number of tokens asked (end-of-turn
tokens are not looked at: the same positions are computed whatever is
written). Prompt tok/s = prompt tokens / (prompt decode + first argmax);
generation tok/s = (tokens - 1) / the time of the rest, wall clock, as
GenerationStats measures ours. llama.cpp's own counters (llama_perf_context:
decode time only) are reported beside them.
"""

import argparse
import glob
import json
import os
import statistics
import sys
import time

import numpy as np
import llama_cpp
from llama_cpp import Llama


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--tokens-dir", required=True, help="prompt-SIZE.json files: {size, tokens, text}")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--gen-for", action="append", default=[], metavar="SIZE=N",
                    help="tokens to generate for one prompt size (what the embedded model wrote)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--n-batch", type=int, default=2048, help="llama.cpp's default (llama-cli, llama-bench)")
    ap.add_argument("--n-ubatch", type=int, default=512, help="llama.cpp's default")
    args = ap.parse_args()
    gen_for = {}
    for item in args.gen_for:
        size, n = item.split("=", 1)
        gen_for[int(size)] = int(n)

    prompts = []
    for path in glob.glob(os.path.join(args.tokens_dir, "prompt-*.json")):
        with open(path, encoding="utf-8") as f:
            prompts.append(json.load(f))
    if not prompts:
        print(f"bench_answer_llamacpp: no prompt-*.json in {args.tokens_dir}", file=sys.stderr)
        return 2
    prompts.sort(key=lambda p: p["size"])

    started = time.perf_counter()
    llm = Llama(
        model_path=args.model,
        n_ctx=args.n_ctx,
        n_batch=args.n_batch,
        n_ubatch=args.n_ubatch,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=False,
        verbose=False,
    )
    load_ms = (time.perf_counter() - started) * 1e3
    ctx = llm._ctx.ctx
    n_vocab = llm.n_vocab()

    def argmax_last() -> int:
        ptr = llama_cpp.llama_get_logits_ith(ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def one_run(ids, gen):
        llm.reset()
        llm._ctx.kv_cache_clear()
        llama_cpp.llama_perf_context_reset(ctx)
        t0 = time.perf_counter()
        llm.eval(ids)
        nxt = argmax_last()
        t1 = time.perf_counter()
        written = [nxt]
        for _ in range(gen - 1):
            llm.eval([nxt])
            nxt = argmax_last()
            written.append(nxt)
        t2 = time.perf_counter()
        perf = llama_cpp.llama_perf_context(ctx)
        return {
            "prompt_tokens": len(ids),
            "generated_tokens": gen,
            "first_token_ms": (t1 - t0) * 1e3,
            "prompt_tokens_per_s": len(ids) / (t1 - t0),
            "tokens_per_s": (gen - 1) / (t2 - t1) if gen > 1 else 0.0,
            "total_ms": (t2 - t0) * 1e3,
            "llama_prompt_ms": perf.t_p_eval_ms,
            "llama_prompt_tokens": perf.n_p_eval,
            "llama_eval_ms": perf.t_eval_ms,
            "llama_eval_tokens": perf.n_eval,
            "text": llm.detokenize(written).decode("utf-8", "replace"),
        }

    out_prompts = []
    for p in prompts:
        ids = [int(t) for t in p["tokens"]]
        gen = gen_for.get(p["size"], args.gen)
        if len(ids) + gen > args.n_ctx:
            print(f"bench_answer_llamacpp: {len(ids)} + {gen} tokens exceed n_ctx {args.n_ctx}", file=sys.stderr)
            return 2
        # The same text tokenized by llama.cpp (control tokens as such): the ids should agree.
        theirs = llm.tokenize(p["text"].encode("utf-8"), add_bos=False, special=True)
        for _ in range(args.warmup):
            one_run(ids, gen)
        runs = [one_run(ids, gen) for _ in range(args.runs)]
        med = lambda k: statistics.median(r[k] for r in runs)
        llama_prompt = [r["llama_prompt_tokens"] / r["llama_prompt_ms"] * 1e3 for r in runs if r["llama_prompt_ms"] > 0]
        llama_eval = [r["llama_eval_tokens"] / r["llama_eval_ms"] * 1e3 for r in runs if r["llama_eval_ms"] > 0]
        out_prompts.append({
            "size": p["size"],
            "prompt_tokens": len(ids),
            "tokenization_matches": theirs == ids,
            "generated_tokens": gen,
            "prompt_tokens_per_s": med("prompt_tokens_per_s"),
            "tokens_per_s": med("tokens_per_s"),
            "first_token_ms": med("first_token_ms"),
            "total_ms": med("total_ms"),
            "llama_perf_prompt_tokens_per_s": statistics.median(llama_prompt) if llama_prompt else None,
            "llama_perf_tokens_per_s": statistics.median(llama_eval) if llama_eval else None,
            "text": runs[0]["text"],
            "runs": [{k: v for k, v in r.items() if k != "text"} for r in runs],
        })

    system_info = llama_cpp.llama_print_system_info()
    print(json.dumps({
        "backend": "llama.cpp",
        "llama_cpp_python": llama_cpp.__version__,
        "system_info": system_info.decode() if isinstance(system_info, bytes) else str(system_info),
        "model": os.path.basename(args.model),
        "threads": args.threads,
        "n_batch": args.n_batch,
        "n_ubatch": args.n_ubatch,
        "n_ctx": args.n_ctx,
        "load_ms": load_ms,
        "runs": args.runs,
        "warmup": args.warmup,
        "prompts": out_prompts,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
