"""Tiny, real, randomly initialised models and data for tests: seconds to build, no network."""

from __future__ import annotations

import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "lovely", "superb", "happy", "bright", "warm"]
NEGATIVE = ["bad", "awful", "poor", "dull", "sad", "grim", "cold", "weak"]
FILLER = ["the", "a", "film", "movie", "plot", "was", "is", "very", "and", "story"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
CARD = """---
license: {license}
library_name: transformers
pipeline_tag: text-classification
---
# tiny-bert

A randomly initialised BERT built by the test suite.
"""


def build_tiny_bert(
    folder: Path,
    license: str = "apache-2.0",
    seed: int = 0,
    card: str | None = None,
    dropout: float = 0.1,
) -> Path:
    """Save a 2-layer, 32-wide BERT with a word-level vocab, safetensors and a model card
    (``card``, when given, is the whole README.md instead of the default one; ``dropout``
    sets BERT's hidden and attention dropout)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + POSITIVE + NEGATIVE + FILLER) + "\n")
    # BertTokenizerFast(vocab_file=...) gives a 5-token vocab on transformers 5; load the folder.
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(SPECIAL + POSITIVE + NEGATIVE + FILLER),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD.format(license=license) if card is None else card)
    return folder


def sentence(rng: random.Random, positive: bool) -> str:
    words = rng.sample(FILLER, 3) + [rng.choice(POSITIVE if positive else NEGATIVE)]
    rng.shuffle(words)
    return " ".join(words)


def write_tsv(path: Path, text_column: str, rows: list[tuple[object, str]]) -> Path:
    lines = [f"label\t{text_column}"] + [f"{label}\t{text}" for label, text in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def sentiment_rows(count: int, seed: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    return [(i % 2, sentence(rng, bool(i % 2))) for i in range(count)]


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
DECODER_SPECIAL = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
DECODER_WORDS = ["review", ":", "positive", "negative"]


def build_tiny_llama(folder: Path, chat_template: bool = True, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide Llama with a word-level tokenizer (and a chat template)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = DECODER_SPECIAL + DECODER_WORDS + POSITIVE + NEGATIVE + FILLER
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(words),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(config)
    # Default init makes every logit ~0 behind the final RMSNorm, and a frozen head then
    # caps how peaked any output can get; a unit-scale head lets LoRA learn in a few steps.
    torch.nn.init.normal_(model.lm_head.weight, std=1.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD.format(license="apache-2.0").replace("bert", "llama"))
    return folder


def sft_rows(count: int, seed: int) -> list[dict[str, str]]:
    """Prompt/response pairs: a review in, its sentiment word out."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        positive = bool(i % 2)
        rows.append(
            {
                "prompt": f"review : {sentence(rng, positive)}",
                "response": "positive" if positive else "negative",
            }
        )
    return rows
