#!/usr/bin/env python3
"""Embedding throughput of sentence-transformers (PyTorch, CPU) on the texts
that examples/bench_embed.rs wrote, with the same batch size. One JSON line.

Usage: bench-embed.py MODEL_DIR TEXTS_JSONL [BATCH]
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

model_dir, texts_path = sys.argv[1], sys.argv[2]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 32
texts = [json.loads(line) for line in open(texts_path)]
model = SentenceTransformer(model_dir, device="cpu")
model.encode(texts[:batch], batch_size=batch)  # warm up
tokens = sum(min(len(model.tokenizer(t)["input_ids"]), model.max_seq_length) for t in texts)
start = time.perf_counter()
model.encode(texts, batch_size=batch, normalize_embeddings=True)
secs = time.perf_counter() - start
print(json.dumps({"embedder": "sentence-transformers", "texts": len(texts), "tokens": tokens, "seconds": secs,
                  "chunks_per_second": len(texts) / secs, "tokens_per_second": tokens / secs, "batch": batch,
                  "threads": torch.get_num_threads()}))
