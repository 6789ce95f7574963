"""Fixtures of the unit tests: an offline Hub, the shared SST-2 data, and a tiny random BERT
model folder (built once per session, a few seconds)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where configs/base.yaml points: ../shared/ beside the checkout (never copied into the repo).
SST2_DIR = REPO_ROOT.parent / "shared" / "data" / "sst2"

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = ["the", "a", "an", "good", "bad", "great", "awful", "movie", "film", "plot", "is", "not"]
TINY_WORDS = _SPECIALS + _WORDS + [f"word{i}" for i in range(100 - len(_SPECIALS) - len(_WORDS))]


@dataclass(frozen=True)
class TinyModel:
    """A saved BertForSequenceClassification folder and what is known about it."""

    path: Path
    num_parameters: int


@pytest.fixture(scope="session", autouse=True)
def _offline_hub(tmp_path_factory: pytest.TempPathFactory):
    """Never reach the network, and keep the datasets cache out of the user's home.

    huggingface_hub reads HF_HUB_OFFLINE at import time, so the module constant is patched
    (transformers' adapter lookup ignores ``local_files_only`` and would otherwise retry HTTP).
    """
    import datasets.config
    import huggingface_hub.constants

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
        mp.setattr(
            datasets.config, "HF_DATASETS_CACHE", str(tmp_path_factory.mktemp("hf-datasets-cache"))
        )
        yield


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    if not (SST2_DIR / "train.tsv").is_file():
        pytest.skip(f"shared SST-2 data not found at {SST2_DIR}")
    return SST2_DIR


def build_tiny_bert(folder: Path) -> int:
    """Save a random 2-layer BERT classifier, its WordPiece tokenizer and a model card."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(TINY_WORDS) + "\n")

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(TINY_WORDS),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=2,
    )
    model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    # from_pretrained on the folder holding vocab.txt builds the WordPiece tokenizer on
    # transformers 4 and 5 alike (5 ignores a ``vocab_file=`` constructor argument).
    BertTokenizerFast.from_pretrained(str(folder)).save_pretrained(folder)
    (folder / "README.md").write_text(
        "---\nlicense: apache-2.0\npipeline_tag: text-classification\n"
        "library_name: transformers\n---\n\n# tiny-bert\n\nRandom weights, for tests only.\n"
    )
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A read-only (by convention) tiny model folder; copy it before changing anything."""
    folder = tmp_path_factory.mktemp("tiny-model") / "tiny-bert"
    return TinyModel(folder, build_tiny_bert(folder))


@pytest.fixture
def tiny_model_copy(tiny_model: TinyModel, tmp_path: Path) -> Path:
    """A private copy of the tiny model folder that a test may modify."""
    return Path(shutil.copytree(tiny_model.path, tmp_path / "tiny-bert-copy"))


@pytest.fixture
def write_yaml(tmp_path: Path):
    """Write ``text`` to ``tmp_path / name`` (parents created) and return the path."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return write
