"""Experiment behind docs/benchmarks.md's "A reranker trained on the archive": a
cross-encoder (all-MiniLM-L6-v2 reading the question and a candidate together,
a scoring head on the mean of its outputs) trained on the archive's own
message pairs to pick a message's reply out of it and 3 random messages, then
used to rerank hybrid search's first 30 chunks (each line scored against the
question, a chunk by its best line). Prints R@1, R@5 and R@10 of hybrid, of
the reranker alone and of the two fused by RRF.

Inputs: an archive with the dataset imported and indexed, and the per-question
lists `examples/eval_retrieval.rs` writes with EVAL_DETAIL=FILE, e.g.
  discord-indexer import ../shared/komodo-dev --guild-name dataset --data-dir D
  discord-indexer index --guild G --model all-MiniLM-L6-v2 --activate --data-dir D
  EVAL_DETAIL=detail.jsonl target/release/examples/eval_retrieval D models ../shared/komodo-dev/queries.tsv G
Usage: rerank-experiment.py ARCHIVE_DB GUILD_ID BASE_MODEL_DIR DETAIL_JSONL
Settings (environment): PAIRS (3000), NEGATIVES (3), MAX_TOKENS (128),
BATCH (8 pairs), LR (3e-5), TOP (30), SEED (0). Needs the PyTorch venv
(scripts/torch-venv.sh); about 20 minutes on 2 cores.
"""
import importlib.util, json, os, random, sys, time

import torch
from transformers import AutoModel, AutoTokenizer

spec = importlib.util.spec_from_file_location("peer", os.path.join(os.path.dirname(__file__), "adapt-peer.py"))
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)


class CrossEncoder(torch.nn.Module):
    def __init__(self, base):
        super().__init__()
        self.bert = AutoModel.from_pretrained(base)
        self.head = torch.nn.Linear(self.bert.config.hidden_size, 1)

    def forward(self, enc):
        h = self.bert(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1)).squeeze(-1)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    db, guild, base, detail = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    env = lambda k, d: type(d)(os.environ.get(k, d))
    seed, n_pairs, negs, max_len = env("SEED", 0), env("PAIRS", 3000), env("NEGATIVES", 3), env("MAX_TOKENS", 128)
    batch, top = env("BATCH", 8), env("TOP", 30)
    random.seed(seed)
    torch.manual_seed(seed)
    pairs = peer.pairs_from(db, guild)
    random.shuffle(pairs)
    replies = [b for _, b in pairs]
    tok = AutoTokenizer.from_pretrained(base)
    model = CrossEncoder(base)
    opt = torch.optim.AdamW(model.parameters(), lr=env("LR", 3e-5))
    train = pairs[:n_pairs]
    steps = len(train) // batch
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)))
    model.train()
    started, losses = time.time(), []
    for step in range(steps):
        group = train[step * batch : (step + 1) * batch]
        firsts, candidates = [], []
        for a, b in group:
            for c in [b] + random.sample(replies, negs):
                firsts.append(a)
                candidates.append(c)
        enc = tok(firsts, candidates, truncation="longest_first", max_length=max_len, padding=True, return_tensors="pt")
        logits = model(enc).view(len(group), negs + 1)
        loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(group), dtype=torch.long))
        opt.zero_grad()
        loss.backward()
        opt.step()
        warmup.step()
        losses.append(loss.item())
        if step % 50 == 0:
            print(f"step {step}/{steps} loss {sum(losses[-50:]) / len(losses[-50:]):.3f} {time.time() - started:.0f} s", file=sys.stderr)
    model.eval()
    lists = [json.loads(line) for line in open(detail)]
    scored = []
    with torch.no_grad():
        for row in (r for r in lists if r["mode"] == "hybrid"):
            chunks = row["list"][:top]
            scores = []
            for chunk in chunks:
                lines = [l for l in chunk["text"].split("\n") if l.strip()]
                enc = tok([row["question"]] * len(lines), lines, truncation="longest_first", max_length=max_len, padding=True, return_tensors="pt")
                scores.append(model(enc).max().item())
            scored.append(([c["target"] for c in chunks], scores))

    def report(name, order):
        n = len(scored)
        hits = [order(t, s) for t, s in scored]
        r = {k: sum(any(h[:k]) for h in hits) / n for k in (1, 5, 10)}
        print(f"{name:24} R@1 {r[1]:.2f} R@5 {r[5]:.2f} R@10 {r[10]:.2f}")

    by_score = lambda s: sorted(range(len(s)), key=lambda j: -s[j])
    report("hybrid", lambda t, s: t)
    report("reranker alone", lambda t, s: [t[j] for j in by_score(s)])
    for k in (5, 10, 30, 60):
        def fused(t, s, k=k):
            rank = {j: r for r, j in enumerate(by_score(s))}
            return [t[j] for j in sorted(range(len(t)), key=lambda j: -(1 / (k + j + 1) + 1 / (k + rank[j] + 1)))]
        report(f"RRF, k = {k}", fused)


if __name__ == "__main__":
    main()
