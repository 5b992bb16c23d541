"""The peer of `discord-indexer adapt`, for scripts/bench-adapt.sh: the same
unsupervised adaptation of a sentence-transformers model to one guild's
archive, in sentence-transformers on PyTorch.

Pairs come from the archive alone: a reply and the message it answers, else
two consecutive messages of a channel by different people within 15 minutes,
both at least 20 characters. The model learns that a message and its answer
belong together (in-batch negatives, symmetric loss), which teaches it the
server's own vocabulary: its abbreviations, names and jargon.

Usage: adapt-model.py ARCHIVE_DB GUILD_ID BASE_MODEL_DIR OUT_DIR
Settings (environment): ADAPT_EPOCHS (1), ADAPT_BATCH (32), ADAPT_LR (2e-5),
ADAPT_MAX_TOKENS (64), ADAPT_SEED (0), ADAPT_THREADS (all cores),
ADAPT_MAX_PAIRS (20000: a random sample of the pairs when there are more).
"""
import json, os, random, shutil, sqlite3, sys, time

import torch
from sentence_transformers import SentenceTransformer

MIN_CHARS = 20
GAP_MS = 15 * 60 * 1000
DISCORD_EPOCH_MS = 1420070400000


def pairs_from(db, guild):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        """SELECT m.id, m.channel_id, m.author_id, m.content, m.reply_to_id FROM messages m
           WHERE m.guild_id = ? AND m.content IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM users u WHERE u.id = m.author_id AND u.bot)
           ORDER BY m.channel_id, m.id""",
        (guild,),
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    pairs, prev = [], None
    for mid, channel, author, content, reply_to in rows:
        content = content.strip()
        first = by_id.get(reply_to) if reply_to else None
        if first is None and prev is not None and prev[1] == channel and prev[2] != author:
            if (mid >> 22) - (prev[0] >> 22) <= GAP_MS:
                first = prev
        if first is not None and len(content) >= MIN_CHARS and len(first[3].strip()) >= MIN_CHARS:
            pairs.append((first[3].strip(), content))
        prev = (mid, channel, author, content)
    return pairs


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    db, guild, base, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    seed = int(os.environ.get("ADAPT_SEED", "0"))
    random.seed(seed)
    torch.manual_seed(seed)
    if os.environ.get("ADAPT_THREADS"):
        torch.set_num_threads(int(os.environ["ADAPT_THREADS"]))
    pairs = pairs_from(db, guild)
    max_pairs = int(os.environ.get("ADAPT_MAX_PAIRS", "20000"))
    if len(pairs) > max_pairs:
        random.shuffle(pairs)
        pairs = pairs[:max_pairs]
    if len(pairs) < 256:
        sys.exit(f"error: only {len(pairs)} message pairs in guild {guild}: too few to adapt a model to")
    model = SentenceTransformer(base, device="cpu")
    model.max_seq_length = int(os.environ.get("ADAPT_MAX_TOKENS", "64"))
    batch = int(os.environ.get("ADAPT_BATCH", "32"))
    epochs = int(os.environ.get("ADAPT_EPOCHS", "1"))
    opt = torch.optim.AdamW(model.parameters(), lr=float(os.environ.get("ADAPT_LR", "2e-5")))
    started = time.time()
    model.train()
    losses = []
    for epoch in range(epochs):
        random.shuffle(pairs)
        for s in range(len(pairs) // batch):
            chunk = pairs[s * batch : (s + 1) * batch]
            a = model(model.tokenize([x for x, _ in chunk]))["sentence_embedding"]
            b = model(model.tokenize([y for _, y in chunk]))["sentence_embedding"]
            sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T * 20.0
            labels = torch.arange(len(chunk))
            loss = (torch.nn.functional.cross_entropy(sim, labels) + torch.nn.functional.cross_entropy(sim.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            if s % 50 == 0:
                print(f"epoch {epoch + 1} step {s}/{len(pairs) // batch} loss {loss.item():.3f}", file=sys.stderr)
    model.eval()
    model.save(out, safe_serialization=True)
    # Only the weights change: the base's input length, tokenizer and pooling
    # files go with them (the training length above is a training setting, and
    # newer sentence-transformers would write these files in another format).
    for name in ("sentence_bert_config.json", "tokenizer.json", "tokenizer_config.json", "1_Pooling/config.json"):
        if os.path.isfile(os.path.join(base, name)):
            shutil.copyfile(os.path.join(base, name), os.path.join(out, name))
    first, last = losses[: max(1, len(losses) // 10)], losses[-max(1, len(losses) // 10) :]
    print(json.dumps({"pairs": len(pairs), "epochs": epochs, "seconds": round(time.time() - started, 1),
                      "loss_first_tenth": sum(first) / len(first), "loss_last_tenth": sum(last) / len(last),
                      "seed": seed, "out": out}))


if __name__ == "__main__":
    main()
