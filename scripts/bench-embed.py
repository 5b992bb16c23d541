#!/usr/bin/env python3
"""Embedding throughput of sentence-transformers (PyTorch) on the texts that
examples/bench_embed.rs wrote, with the same batch size. One JSON line.

Usage: bench-embed.py MODEL_DIR TEXTS_JSONL [BATCH] [--device cpu|cuda]
                      [--dtype f32|f16|bf16] [--repeat R] [--vectors OUT]
"""
import argparse
import json
import time

import torch
from sentence_transformers import SentenceTransformer

p = argparse.ArgumentParser()
p.add_argument("model_dir")
p.add_argument("texts")
p.add_argument("batch", nargs="?", type=int, default=32)
p.add_argument("--device", default="cpu")
p.add_argument("--dtype", default="f32", choices=["f32", "f16", "bf16"])
p.add_argument("--repeat", type=int, default=1)
p.add_argument("--vectors")
a = p.parse_args()
texts = [json.loads(line) for line in open(a.texts)]
model = SentenceTransformer(a.model_dir, device=a.device)
if a.dtype != "f32":
    model = model.to({"f16": torch.float16, "bf16": torch.bfloat16}[a.dtype])
if a.vectors:
    vectors = model.encode(texts, batch_size=a.batch, normalize_embeddings=True, convert_to_numpy=False)
    with open(a.vectors, "w") as f:
        for v in vectors:
            f.write(json.dumps(v.float().cpu().tolist()) + "\n")
else:
    model.encode(texts[:a.batch], batch_size=a.batch)  # warm up
timed = texts * a.repeat
tokens = sum(min(len(model.tokenizer(t)["input_ids"]), model.max_seq_length) for t in texts) * a.repeat
start = time.perf_counter()
model.encode(timed, batch_size=a.batch, normalize_embeddings=True)  # returns on the CPU: synchronised
secs = time.perf_counter() - start
print(json.dumps({"embedder": "sentence-transformers", "device": a.device, "precision": a.dtype,
                  "texts": len(timed), "tokens": tokens, "seconds": secs,
                  "chunks_per_second": len(timed) / secs, "tokens_per_second": tokens / secs, "batch": a.batch,
                  "threads": torch.get_num_threads()}))
