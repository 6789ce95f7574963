"""References to models and adapters, readable without torch: a pinned base, an adapter's
``loraflow_base.json`` (base, class names, task).

The pipeline's process passes these around long before it loads a model; keeping them apart
from ``modeling`` (torch, transformers, PEFT: seconds to import) lets it start its stages
without that import, which then happens where a model is first needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

BASE_REF_FILE = "loraflow_base.json"
SEQ_CLS, CAUSAL_LM = "sequence-classification", "causal-lm"


@dataclass(frozen=True)
class ModelRef:
    """A model pinned to a commit: the only way stages refer to a base model."""

    repo_id: str
    revision: str

    def __str__(self) -> str:
        return f"{self.repo_id}@{self.revision}"


def read_base_ref(adapter_dir: Path) -> tuple[ModelRef, list[str]]:
    data = json.loads((Path(adapter_dir) / BASE_REF_FILE).read_text())
    return ModelRef(data["repo_id"], data["revision"]), list(data["labels"])


def read_task(adapter_dir: Path) -> str:
    """The adapter's training task (sequence-classification for adapters saved before it)."""
    data = json.loads((Path(adapter_dir) / BASE_REF_FILE).read_text())
    return data.get("task", SEQ_CLS)


def drop_peft_template_card(adapter_dir: Path) -> None:
    """Remove the blank model card PEFT writes beside an adapter ("Model Card for Model ID",
    every field "[More Information Needed]"): the registered version ships loraflow's card."""
    card = Path(adapter_dir) / "README.md"
    if card.is_file() and "[More Information Needed]" in card.read_text(errors="replace"):
        card.unlink()
