"""Writes crates/lmfuse-encoder/tests/fixtures/cross-tiny: a tiny random-weight Hugging Face
cross-encoder (BertForSequenceClassification, one label, a 92-piece WordPiece vocabulary) and the
logits `transformers` gives for a few (query, passage) pairs, one of them cut by longest-first
truncation (sentence-transformers' CrossEncoder is checked to give the same). lmfuse's CrossEncoder must reproduce them. Run once with the peers' venv:

    bench/.venv/bin/python scripts/make-cross-encoder-fixture.py
"""

import json
import pathlib

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

OUT = pathlib.Path(__file__).resolve().parents[1] / "crates/lmfuse-encoder/tests/fixtures/cross-tiny"
MAX_LENGTH = 24
WORDS = """the a at of to and in is for on with how do does what why when where dogs dog cats cat
bark barks purr tea green brew brewed water boiling rust language borrow checker bread yeast
flour bicycle chain oil park postman house mice sticks fetch programming systems slowly wild
rises every few hundred kilometres point below memory safe safety fast quick kitchen oven bake
baking hot cold milk sugar coffee cup long time take takes permit building roof cost price tax
deduction year person""".split()
PAIRS = [
    ("why do dogs bark", "dogs bark at the postman in the park"),
    ("why do dogs bark", "green tea is brewed with water below boiling point"),
    ("how to brew tea", "green tea is brewed with water below boiling point"),
    ("rust memory safety", "rust is a systems programming language with a borrow checker"),
    ("baking bread", "bread rises slowly with wild yeast and flour in a hot oven every year "
     "for a few hundred kitchen bakers who bake with milk and sugar"),
    ("unknown zebra words", "the cat"),
]


def tokenizer(vocab):
    tok = Tokenizer(models.WordPiece(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = vocab.index("[CLS]"), vocab.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + ["##s", "##ing"]
    (OUT / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer(vocab).save(str(OUT / "tokenizer.json"))
    torch.manual_seed(13)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        type_vocab_size=2, num_labels=1, initializer_range=0.5)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(OUT, safe_serialization=True)
    fast = PreTrainedTokenizerFast(tokenizer_file=str(OUT / "tokenizer.json"),
                                   unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    batch = fast([q for q, _ in PAIRS], [p for _, p in PAIRS], padding=True, truncation=True,
                 max_length=MAX_LENGTH, return_tensors="pt", return_token_type_ids=True)
    # The second segment must read as type 1, as BERT's own tokenizer gives it.
    assert batch["token_type_ids"].max() == 1, "the tokenizer gave no segment types"
    with torch.no_grad():
        logits = model(**batch).logits[:, 0].tolist()
    # sentence-transformers' CrossEncoder (what users rerank with) reads the folder the same way.
    from sentence_transformers import CrossEncoder
    peer = CrossEncoder(str(OUT), max_length=MAX_LENGTH, activation_fn=torch.nn.Identity())
    assert max(abs(float(a) - b) for a, b in zip(peer.predict(PAIRS), logits)) < 1e-5
    ids = [[int(t) for t, m in zip(row, mask) if m] for row, mask in
           zip(batch["input_ids"], batch["attention_mask"])]
    (OUT / "reference.json").write_text(json.dumps({
        "max_length": MAX_LENGTH,
        "pairs": [{"query": q, "passage": p, "logit": l, "input_ids": i}
                  for (q, p), l, i in zip(PAIRS, logits, ids)],
        "made_by": "scripts/make-cross-encoder-fixture.py with transformers "
                   + __import__("transformers").__version__,
    }, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
