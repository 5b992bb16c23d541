#!/usr/bin/env python3
"""Writes two small random-weight models and what PyTorch computes with them,
for the parity tests of query/document prompts and of the cross-encoder
(no weights are downloaded: the models are made here):

- tests/fixtures/tiny-prompts/: a sentence-transformers BERT model whose
  config_sentence_transformers.json carries prompts; reference.json holds
  sentence-transformers' `encode(texts, prompt_name=...)` for each prompt.
- tests/fixtures/tiny-reranker/: a transformers BertForSequenceClassification
  (one label, as the ms-marco cross-encoders have); reference.json holds its
  logits for (question, passage) pairs.

Both share a small WordPiece vocabulary (its tokenizer.json is written by
transformers' BertTokenizerFast). Weights are drawn with a larger spread than
transformers' default initialisation so that outputs differ clearly.

Usage: $(scripts/torch-venv.sh) scripts/reference-prompts-rerank.py
"""
import json
import os
import shutil
import tempfile

import torch
from sentence_transformers import SentenceTransformer, models
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

WORDS = """the a an to of and in is it on for with how do we i you can not at this that be was
are have has what why when where who which my our your restart deploy deployed staging
server config change key keys rotate rotation notary runbook ops error linker cc found install
build essential cargo again proxy settings wifi office disconnect disconnecting afternoon
router firmware update updated nightly job ci cache cached failing fails failed test tests
flaky database migration migrate backup backups restore disk full log logs token bot
channel thread message messages search index model question answer docker compose port
memory leak crash crashed night weekend monday release version tag branch merge main
review approve approved ok yes no thanks please help anyone looked needs after before
then again new old run runs running stop stopped start started slow fast timeout""".split()

PAIRS = [
    ("how do we rotate the notary keys", "we moved key rotation to the new runbook, see ops"),
    ("how do we rotate the notary keys", "the office wifi keeps disconnecting every afternoon"),
    ("why is the nightly job failing", "the ci cache was stale, the nightly job runs again after a restart"),
    ("why is the nightly job failing", "thanks"),
    ("linker cc not found", "error: linker cc not found. install build essential, then cargo build again"),
    ("database backup", "restore the backup before the migration " * 20),
    ("", "an empty question still scores"),
    ("who approved the release", ""),
]

TEXTS = [
    "how do we rotate the notary keys",
    "the staging deploy needs a restart after the config change",
    "",
    "error: linker cc not found " * 12,
]

PROMPTS = {"query": "query: ", "document": "passage: "}


def tokenizer(directory):
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,:;!?'\"-/()")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters] + WORDS
    vocab = {}
    for t in tokens:
        vocab.setdefault(t, len(vocab))
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
        mask_token="[MASK]", model_max_length=128,
        # As BertTokenizerFast: the passage's tokens are segment 1, which the model reads.
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(directory)
    path = os.path.join(directory, "special_tokens_map.json")
    if os.path.exists(path):
        os.remove(path)
    return fast


def config(vocab_size, **extra):
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.3,
        **extra,
    )


def spread(model):
    # Layer norms at 1/0 and biases at 0 would leave whole code paths unchecked.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)


def rerank_fixture():
    out = os.path.join(ROOT, "tiny-reranker")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    tok = tokenizer(out)
    torch.manual_seed(7)
    model = BertForSequenceClassification(config(len(tok), num_labels=1)).eval()
    spread(model)
    model.save_pretrained(out, safe_serialization=True)
    enc = tok([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation=True, max_length=128,
              return_tensors="pt")
    assert enc["token_type_ids"].max() == 1, "the passage is segment 1"
    with torch.no_grad():
        logits = model(**enc).logits[:, 0]
    ref = {
        "produced_by": "transformers BertForSequenceClassification (PyTorch, CPU), scripts/reference-prompts-rerank.py",
        "max_length": 128,
        "pairs": [list(p) for p in PAIRS],
        "logits": [round(float(x), 7) for x in logits],
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"tiny-reranker: {len(PAIRS)} logits, from {min(ref['logits']):.3f} to {max(ref['logits']):.3f}")


def prompts_fixture():
    out = os.path.join(ROOT, "tiny-prompts")
    shutil.rmtree(out, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        tok = tokenizer(base)
        torch.manual_seed(11)
        bert = BertModel(config(len(tok)), add_pooling_layer=False).eval()
        spread(bert)
        bert.save_pretrained(base, safe_serialization=True)
        word = models.Transformer(base, max_seq_length=128)
        pooling = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
        st = SentenceTransformer(modules=[word, pooling], prompts=PROMPTS, device="cpu")
        st.save(out)
    os.remove(os.path.join(out, "README.md"))
    st = SentenceTransformer(out, device="cpu")
    ref = {
        "produced_by": "sentence-transformers encode(prompt_name=...) (PyTorch, CPU), "
        "scripts/reference-prompts-rerank.py",
        "prompts": PROMPTS,
        "texts": TEXTS,
        "vectors": {
            name: [[round(float(x), 7) for x in v] for v in
                   st.encode(TEXTS, prompt_name=name, normalize_embeddings=True, convert_to_numpy=True)]
            for name in PROMPTS
        },
    }
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
        f.write("\n")
    print(f"tiny-prompts: {len(TEXTS)} texts x {len(PROMPTS)} prompts")


if __name__ == "__main__":
    rerank_fixture()
    prompts_fixture()
