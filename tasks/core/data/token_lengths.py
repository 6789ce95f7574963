"""Token lengths with the audited model's own tokenizer: what truncation will cut off.

Texts longer than ``max_length`` tokens are silently truncated in training and evaluation, so
the share of such texts is a data property worth a check. Counting uses the Rust tokenizer on
whole columns (``encode_batch_fast``, no offsets, no truncation), which keeps 67k SST-2
sentences to seconds on two cores.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from tasks.core.config.data import DataChecksSpec
from tasks.core.data.report import CheckResult, examples, fired

PERCENTILES = (50, 90, 95, 99)
CHUNK = 16_384
PARALLELISM = "TOKENIZERS_PARALLELISM"


def count_tokens(tokenizer, texts: list[str]) -> np.ndarray:
    """Tokens per text, special tokens included, never truncated."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    lengths: list[int] = []
    if backend is not None:
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(backend.to_str())  # a copy: never touch the caller's settings
        fast.no_truncation()
        fast.no_padding()
        with rust_threads():
            for start in range(0, len(texts), CHUNK):
                batch = fast.encode_batch_fast(
                    texts[start : start + CHUNK], add_special_tokens=True
                )
                lengths += [len(encoding.ids) for encoding in batch]
    else:  # a slow (Python) tokenizer
        for start in range(0, len(texts), CHUNK):
            ids = tokenizer(texts[start : start + CHUNK], truncation=False)["input_ids"]
            lengths += [len(i) for i in ids]
    return np.asarray(lengths, dtype=np.int64)


@contextmanager
def rust_threads():
    """The Rust tokenizer on every core for this count. The state home turns its threads off
    (``TOKENIZERS_PARALLELISM=false``: training and serving score on their own threads); the
    Rust side reads that variable per call, so it is lifted around this call only. 67k SST-2
    sentences: 1.7-1.9 s on one thread, 0.9-1.1 s on 2 cores."""
    before = os.environ.get(PARALLELISM)
    os.environ[PARALLELISM] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(PARALLELISM, None)
        else:
            os.environ[PARALLELISM] = before


def length_stats(lengths: np.ndarray, max_length: int, report_at: tuple[int, ...]) -> dict:
    if lengths.size == 0:
        return {"count": 0}
    at = sorted({*report_at, max_length})
    return {
        "count": int(lengths.size),
        "mean": round(float(lengths.mean()), 2),
        **{f"p{p}": int(np.percentile(lengths, p)) for p in PERCENTILES},
        "max": int(lengths.max()),
        "truncated_share": {str(n): float((lengths > n).mean()) for n in at},
    }


def check_token_lengths(
    split: str,
    texts: list[str],
    tokenizer,
    max_length: int,
    checks: DataChecksSpec,
    rows: list[int] | None = None,
) -> CheckResult:
    """``rows``: the file row of each text (default: 1, 2, ... in order)."""
    lengths = count_tokens(tokenizer, texts)
    stats = length_stats(lengths, max_length, checks.report_lengths)
    positions = np.flatnonzero(lengths > max_length)
    over = [rows[i] for i in positions] if rows is not None else (positions + 1).tolist()
    share = len(over) / len(texts) if texts else 0.0
    detail = f"{len(over)} of {len(texts):,} texts ({share:.2%}) exceed {max_length} tokens"
    if lengths.size:
        detail += (
            "; "
            + ", ".join(f"p{p} {stats[f'p{p}']}" for p in PERCENTILES)
            + f", max {stats['max']}; truncated at "
            + ", ".join(f"{n}: {s:.2%}" for n, s in stats["truncated_share"].items())
        )
    return CheckResult(
        "token_lengths",
        split,
        share,
        f"max {checks.max_truncated_share:.1%} over {max_length} tokens",
        fired(checks.token_lengths, share > checks.max_truncated_share),
        detail,
        examples(over),
        "share",
        stats,
    )
