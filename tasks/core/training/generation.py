"""Generate answers from a causal LM + LoRA adapter: the one path evaluation, the registered
model and the service all use, so what was gated is how it answers when served.

Prompts (chat turns) render through the tokenizer's chat template, are left-padded into one
batch and decoded together; an answer stops at EOS, its token budget or the first stop
sequence. Greedy unless the pinned ``GenerationSpec`` asks for sampling.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoTokenizer

from tasks.core.config.generation import GenerationSpec
from tasks.core.training.modeling import ModelRef, load_causal_lm, read_base_ref
from tasks.core.training.sft import prompt_ids


@dataclass(frozen=True)
class Answer:
    text: str
    prompt_tokens: int
    output_tokens: int


@dataclass
class Generator:
    """A loaded decoder (with or without adapter) and its tokenizer; lives in one process."""

    model: object
    tokenizer: object
    source: str
    role: str = "candidate"

    def generate(self, prompts: list, spec: GenerationSpec, batch_size: int = 16) -> list[Answer]:
        answers: list[Answer] = []
        for start in range(0, len(prompts), batch_size):
            answers += generate_batch(
                self.model, self.tokenizer, prompts[start : start + batch_size], spec
            )
        return answers


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """``text`` before the earliest stop sequence it contains."""
    ends = [text.find(s) for s in stop if s and s in text]
    return text[: min(ends)] if ends else text


@torch.inference_mode()
def generate_batch(model, tokenizer, prompts: list, spec: GenerationSpec) -> list[Answer]:
    """Answers to ``prompts`` (strings or chat turns), one left-padded batch decoded together."""
    if not prompts:
        return []
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(ids) for ids in encoded)
    ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(encoded):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    device = next(model.parameters()).device
    sampling = spec.temperature > 0
    if sampling:
        torch.manual_seed(spec.seed)
    out = model.generate(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        max_new_tokens=spec.max_new_tokens,
        do_sample=sampling,
        temperature=spec.temperature if sampling else None,
        top_p=spec.top_p if sampling else None,
        top_k=None,
        pad_token_id=pad,
        eos_token_id=tokenizer.eos_token_id,
    )
    answers = []
    for i, row in enumerate(out[:, width:].tolist()):
        if tokenizer.eos_token_id in row:
            row = row[: row.index(tokenizer.eos_token_id) + 1]
        row = [t for t in row if t != pad or t == tokenizer.eos_token_id]
        text = tokenizer.decode(row, skip_special_tokens=True).strip()
        answers.append(Answer(cut_at_stop(text, spec.stop).strip(), len(encoded[i]), len(row)))
    return answers


def load_generator(
    adapter_dir: Path, source: str, cache_dir: Path | None = None, role: str = "candidate"
) -> Generator:
    """Base decoder from the mirror + the adapter folder written by ``save_adapter``."""
    ref, _ = read_base_ref(adapter_dir)
    base = load_causal_lm(ref, cache_dir)
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    model.eval()
    return Generator(model, _tokenizer(adapter_dir), source, role)


def load_base_generator(adapter_dir: Path, cache_dir: Path | None = None) -> Generator:
    """The adapter's base decoder alone, with the adapter's tokenizer (the 'before' figures)."""
    ref, _ = read_base_ref(adapter_dir)
    model = load_causal_lm(ModelRef(ref.repo_id, ref.revision), cache_dir)
    model.eval()
    return Generator(model, _tokenizer(adapter_dir), str(ref), role="base")


def _tokenizer(adapter_dir: Path):
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def timed(generator: Generator, prompts: list, spec: GenerationSpec, batch_size: int):
    """(answers, seconds)."""
    started = time.perf_counter()
    answers = generator.generate(prompts, spec, batch_size)
    return answers, time.perf_counter() - started
