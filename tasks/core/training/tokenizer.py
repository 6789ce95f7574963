"""The tokenizer of a pinned base model, without PEFT.

Data validation counts tokens before any model loads. Importing it from ``modeling`` pulled
PEFT and what PEFT imports (sympy, accelerate) into the pipeline's process at the validate
stage: 2.7 s of a quickstart's critical path by py-spy. Evaluation imports PEFT later, in a
thread, while the training processes compute.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.training.refs import ModelRef


def load_tokenizer(ref: ModelRef, cache_dir: Path | None = None):
    """``AutoTokenizer`` of ``ref`` from the mirror; decoders without a pad token pad with EOS."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        ref.repo_id, revision=ref.revision, cache_dir=cache_dir
    )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoders often ship without a pad token
    return tokenizer
