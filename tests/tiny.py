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


def build_tiny_bert(folder: Path, license: str = "apache-2.0", seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide BERT with a word-level vocab, safetensors and a model card."""
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
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "README.md").write_text(CARD.format(license=license))
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
