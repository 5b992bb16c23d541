#!/usr/bin/env python3
"""Writes tests/fixtures/minilm-reference.json: all-MiniLM-L6-v2 embeddings of a
few chat-shaped texts, computed by sentence-transformers (PyTorch, CPU). The
parity test checks candle's vectors against these.

Usage: python3 scripts/reference-vectors.py models/all-MiniLM-L6-v2
(needs: pip install torch sentence-transformers; HF_HUB_OFFLINE=1 is fine)
"""
import hashlib
import json
import sys

from sentence_transformers import SentenceTransformer

TEXTS = [
    "hello world",
    "Alice: has anyone looked at the staging deploy?\nBob: yes, it needs a restart after the config change",
    "Carol: how do we rotate the notary keys now?\nDmitri (replying to Carol: \"how do we rotate the notary…\"): "
    "we moved key rotation to the new runbook, see #ops",
    "Eve: error: linker `cc` not found\nFarah: install build-essential, then cargo build again",
    "Inês: ça marche pas avec le proxy 🙃\nJamal: 代理设置在 settings 里",
    "",
    " ".join(f"token{i} is a fairly long line of chat about the nightly job and the CI cache" for i in range(60)),
    "Kofi: ok",
]


def main(model_dir: str) -> None:
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)
    with open(f"{model_dir}/model.safetensors", "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    out = {
        "model": "all-MiniLM-L6-v2",
        "model_sha256": sha,
        "max_seq_length": model.max_seq_length,
        "produced_by": "sentence-transformers (PyTorch, CPU), scripts/reference-vectors.py",
        "texts": TEXTS,
        "vectors": [[round(float(x), 7) for x in v] for v in vectors],
    }
    with open("tests/fixtures/minilm-reference.json", "w") as f:
        json.dump(out, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(TEXTS)} vectors of {len(vectors[0])} dims")


if __name__ == "__main__":
    main(sys.argv[1])
