"""Writes the tiny encoder-family fixtures of crates/lmfuse-encoder/tests/fixtures/families/.

Each family is a random-weight model (seeded) saved as an ordinary Hugging Face +
sentence-transformers folder, with `reference.json`: the texts, the token ids that
sentence-transformers feeds the model, and its embeddings (PyTorch, f32). The Rust test
(crates/lmfuse-encoder/tests/families.rs) loads each folder and must reproduce both.

    e5_unigram  BERT layers, SentencePiece-Unigram tokenizer (<s> … </s>), mean pooling,
                normalised, default prompt "query: " (multilingual-e5's layout)
    xlmr        XLM-RoBERTa: positions numbered from pad_token_id + 1, one token type,
                the same Unigram tokenizer, mean pooling
    bge_zh      BERT with a character WordPiece tokenizer (Chinese split per character,
                lower-cased), CLS pooling, normalised (bge-small-zh-v1.5's layout)

Made once and committed; rerun only to change them:
    bench/.venv/bin/python scripts/make_family_fixtures.py
"""
import json
import os
import shutil

import torch
from sentence_transformers import SentenceTransformer
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

OUT = os.path.join(os.path.dirname(__file__), "..", "crates/lmfuse-encoder/tests/fixtures/families")
HIDDEN, LAYERS, HEADS, INTER, MAX_SEQ = 16, 2, 2, 32, 24

CORPUS = [
    "the hotel room was clean and the staff were friendly",
    "the food arrived cold and late, never again",
    "great value for money, would stay here again",
    "the delivery was fast and the noodles were hot",
    "what is the exchange rate for my card payment",
    "how do I reset my password",
    "酒店的房间很干净，服务员也很友好",
    "外卖送得很快，面条还是热的",
    "价格实惠，下次还会再来",
    "送餐太慢了，饭菜都凉了",
    "我的银行卡付款汇率是多少",
    "如何重置我的密码",
    "query: passage: hello world",
] * 3

TEXTS = [
    "the hotel room was clean",
    "THE FOOD WAS COLD!!",
    "酒店很干净，服务很好",
    "送餐太慢",
    "ＡＢＣ　１２３ full-width",
    "mixed 中文 and English text",
    "unseen words: xylophone quokka",
    "emoji 😀 and symbols ☃ ©",
    "a",
    "",
    "a long text " + " ".join(["the hotel room was clean and the food was hot"] * 6),
    "很长的文本" + "酒店的房间很干净服务员也很友好" * 4,
]


def unigram_tokenizer():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=160, special_tokens=["<s>", "<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", 0), ("</s>", 2)])
    return tok, dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
                     cls_token="<s>", sep_token="</s>")


def wordpiece_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok, dict(unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                     mask_token="[MASK]")


def randomise(model, seed):
    """Weights far from the near-identity of a fresh init, so that every layer matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.1 * noise if "LayerNorm.weight" in name else 0.2 * noise)


def write_st_files(d, pooling, normalize, prompt):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        os.makedirs(os.path.join(d, "2_Normalize"), exist_ok=True)
    os.makedirs(os.path.join(d, "1_Pooling"), exist_ok=True)
    dump(os.path.join(d, "modules.json"), modules)
    dump(os.path.join(d, "1_Pooling/config.json"), {
        "word_embedding_dimension": HIDDEN,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    })
    dump(os.path.join(d, "sentence_bert_config.json"),
         {"max_seq_length": MAX_SEQ, "do_lower_case": False})
    if prompt:
        dump(os.path.join(d, "config_sentence_transformers.json"), {
            "prompts": {"query": "query: ", "passage": "passage: "},
            "default_prompt_name": "query",
        })


def dump(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, ensure_ascii=False, indent=1)
        f.write("\n")


def make(name, model, tokenizer, pooling, normalize, prompt=None):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    model.save_pretrained(d, safe_serialization=True)
    tok, special = tokenizer
    PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=MAX_SEQ, **special).save_pretrained(d)
    write_st_files(d, pooling, normalize, prompt)
    st = SentenceTransformer(d, device="cpu")
    assert st.max_seq_length == MAX_SEQ
    inputs = [(prompt or "") + t for t in TEXTS]
    ids = [st.tokenizer(t, truncation=True, max_length=MAX_SEQ)["input_ids"] for t in inputs]
    emb = st.encode(TEXTS, batch_size=5, convert_to_numpy=True)
    dump(os.path.join(d, "reference.json"),
         {"texts": TEXTS, "ids": ids, "embeddings": [[float(x) for x in row] for row in emb]})
    print(f"{name}: {len(tok.get_vocab())} pieces, {sum(p.numel() for p in model.parameters())} weights")


def main():
    torch.manual_seed(0)
    uni = unigram_tokenizer()
    vocab = len(uni[0].get_vocab())
    bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, intermediate_size=INTER,
                                max_position_embeddings=MAX_SEQ + 8, pad_token_id=1),
                     add_pooling_layer=False)
    randomise(bert, 1)
    make("e5_unigram", bert, uni, "mean", True, prompt="query: ")

    xlmr = XLMRobertaModel(XLMRobertaConfig(vocab_size=vocab, hidden_size=HIDDEN,
                                            num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                            intermediate_size=INTER, type_vocab_size=1,
                                            max_position_embeddings=MAX_SEQ + 2, pad_token_id=1,
                                            bos_token_id=0, eos_token_id=2),
                           add_pooling_layer=False)
    randomise(xlmr, 2)
    make("xlmr", xlmr, uni, "mean", False)

    wp = wordpiece_tokenizer()
    bge = BertModel(BertConfig(vocab_size=len(wp[0].get_vocab()), hidden_size=HIDDEN,
                               num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                               intermediate_size=INTER, max_position_embeddings=MAX_SEQ + 8),
                    add_pooling_layer=False)
    randomise(bge, 3)
    make("bge_zh", bge, wp, "cls", True)


if __name__ == "__main__":
    main()
