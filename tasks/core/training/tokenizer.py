"""The tokenizer of a pinned base model, without PEFT.

Data validation counts tokens before any model loads. Importing it from ``modeling`` pulled
PEFT and what PEFT imports (sympy, accelerate) into the pipeline's process at the validate
stage: 2.7 s of a quickstart's critical path by py-spy. Evaluation imports PEFT later, in a
thread, while the training processes compute. Where the tokenizer's class is plain from the
model's files, it is built without ``AutoTokenizer`` (``tokenizer_class``), which imports
torch to read the config: the same tokenizer, 1.6 s less.
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.training.refs import ModelRef


def load_tokenizer(ref: ModelRef, cache_dir: Path | None = None):
    """``AutoTokenizer``'s tokenizer of ``ref`` from the mirror, built by its class directly
    where the class is plain from the files (``tokenizer_class``: no torch import); decoders
    without a pad token pad with EOS."""
    from tasks.core.training.tokenizer_class import direct_class

    tokenizer_class = direct_class(ref.repo_id, ref.revision, cache_dir)
    if tokenizer_class is None:
        from transformers import AutoTokenizer as tokenizer_class
    tokenizer = tokenizer_class.from_pretrained(
        ref.repo_id, revision=ref.revision, cache_dir=cache_dir
    )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # decoders often ship without a pad token
    return tokenizer
