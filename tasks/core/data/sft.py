"""Prepare generative (SFT) data: conversations in, checked, fingerprinted, saved.

The generative counterpart of ``prepare``: every row becomes a conversation (``chat``), the
rows are checked (structure, empty prompts or answers, duplicates, prompt-level leakage
between train and eval, PII and secrets in the answers, token lengths of the rendered
conversation) and the prepared splits hold ``prompt`` (last user turn), ``messages`` (the
prompt's turns as JSON) and ``response``. The fingerprint hashes the rendered text and the
chat template's sha256, so a changed template is a changed dataset and a changed training.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import Dataset, DatasetDict

from tasks.core.config.data import DataSpec, SplitSpec
from tasks.core.data.chat import ConversationError, from_messages, from_pair, render
from tasks.core.data.chat import template_sha256 as chat_template_sha256
from tasks.core.data.checks import check_pii
from tasks.core.data.loading import comparison_keys, load_split, source_uri
from tasks.core.data.pii import scan
from tasks.core.data.preprocess import Preprocessing
from tasks.core.data.report import CheckResult, DataReport, examples, fired
from tasks.core.data.sampling import split_result, split_rows
from tasks.core.data.token_lengths import length_stats

SPLITS = ("train", "eval")
CONVERSATION_HINT = (
    "each row needs user turn(s) then a final assistant turn, roles system/user/assistant"
)


def _columns(spec: SplitSpec) -> list[str]:
    cols = [spec.messages_column] if spec.messages_column else []
    cols += [c for c in (spec.prompt_column, spec.response_column, spec.system_column) if c]
    return cols + [c for c in spec.template_columns if c not in cols]


def _filled(template: str, row: pd.Series, value_map: dict[str, dict[str, str]]) -> str:
    values = {}
    for column, value in row.items():
        text = "" if value is None else str(value).strip()
        values[str(column)] = value_map.get(str(column), {}).get(text, text)
    return template.format(**values)


def _pair(row: pd.Series, spec: SplitSpec) -> tuple[str, str]:
    """(prompt, response) of a row: its columns, or the templates filled from it."""
    prompt = (
        _filled(spec.prompt_template, row, spec.value_map)
        if spec.prompt_template
        else row[spec.prompt_column]
    )
    response = (
        _filled(spec.response_template, row, spec.value_map)
        if spec.response_template
        else row[spec.response_column]
    )
    return prompt, response


def map_split(split: str, split_spec: SplitSpec, spec: DataSpec, checks: list[CheckResult]):
    """The split as a frame of conversations (``conv``, ``row``, ``prompt``, ``response``);
    None when columns are missing. Rows that are no conversation fail the 'conversation' check."""
    raw = load_split(split_spec).to_pandas()
    missing = [c for c in _columns(split_spec) if c not in raw.columns]
    if missing:
        detail = f"{split_spec.source}: missing columns {missing}; columns: {list(raw.columns)}"
        checks.append(
            CheckResult("schema", split, len(missing), "0", "fail", detail, (), "columns")
        )
        return None
    norm = Preprocessing.from_spec(spec)
    systems = raw[split_spec.system_column] if split_spec.system_column else None
    convs, bad, reasons = [], [], {}
    for i in range(len(raw)):
        system = spec.system_prompt
        if systems is not None and isinstance(systems.iat[i], str) and systems.iat[i].strip():
            system = systems.iat[i]
        try:
            if split_spec.messages_column:
                conv = from_messages(raw[split_spec.messages_column].iat[i], system)
            else:
                conv = from_pair(*_pair(raw.iloc[i], split_spec), system)
        except ConversationError as exc:
            bad.append(i + 1)
            reasons.setdefault(str(exc), i + 1)
            conv = None
        convs.append(conv)
    if bad:
        why = "; ".join(f"row {r}: {m}" for m, r in list(reasons.items())[:3])
        detail = f"{len(bad)} rows are no conversation ({why})"
        result = CheckResult("conversation", split, len(bad), "0 rows", "fail", detail,
                             examples(bad), hint=CONVERSATION_HINT)  # fmt: skip
        checks.append(result)
    else:
        checks.append(CheckResult("conversation", split, 0, "0 rows", "pass", "every row parses"))
    frame = pd.DataFrame({"conv": convs, "row": np.arange(1, len(raw) + 1)})
    frame = frame[frame["conv"].notna()].reset_index(drop=True)
    frame["conv"] = [_normalized(c, norm) for c in frame["conv"]]
    frame["prompt"] = [c.user_text for c in frame["conv"]]
    frame["response"] = [c.response for c in frame["conv"]]
    checks.append(_empty(split, frame, spec.checks.empty_text))
    if spec.pii.policy != "off":
        found = scan(frame["response"], spec.pii.kinds, spec.pii.phone_regions)
        result = check_pii(split, found, spec.pii.policy, spec.pii.phone_regions)
        rows = tuple(int(frame["row"].iat[r - 1]) for r in result.examples)
        checks.append(_replace(result, detail=f"responses: {result.detail}", examples=rows))
        if norm.redact and found.rows:
            redacted = found.redacted(frame["response"])
            frame["conv"] = [_answer(c, r) for c, r in zip(frame["conv"], redacted, strict=True)]
            frame["response"] = redacted
    frame["key"] = comparison_keys(pd.Series([c.prompt_json() for c in frame["conv"]]))
    return frame


def _replace(result: CheckResult, **changes) -> CheckResult:
    from dataclasses import replace

    return replace(result, **changes)


def _normalized(conv, norm: Preprocessing):
    turns = tuple(
        {"role": t["role"], "content": norm.apply([t["content"]])[0]} for t in conv.prompt
    )
    return type(conv)(turns, norm.apply([conv.response])[0])


def _answer(conv, response: str):
    return type(conv)(conv.prompt, response)


def _empty(split: str, frame: pd.DataFrame, severity: str) -> CheckResult:
    empty = frame[(frame["prompt"].str.strip() == "") | (frame["response"].str.strip() == "")]
    rows = empty["row"].tolist()
    verdict = fired(severity, bool(rows)) if severity != "off" else "pass"
    detail = f"{len(rows)} rows with an empty prompt or response"
    return CheckResult("empty_text", split, len(rows), "0 rows", verdict, detail, examples(rows))


def _duplicates(split: str, frame: pd.DataFrame, spec: DataSpec) -> CheckResult:
    keyed = frame["key"] + "\x00" + frame["response"]
    repeat = frame[keyed.duplicated(keep="first")]
    share = len(repeat) / len(frame) if len(frame) else 0.0
    hit = share > spec.checks.max_duplicate_share
    verdict = fired(spec.checks.duplicates, hit) if spec.checks.duplicates != "off" else "pass"
    detail = f"{len(repeat)} rows repeat an earlier prompt and response"
    threshold = f"<= {spec.checks.max_duplicate_share:.2%}"
    return CheckResult("duplicates", split, share, threshold, verdict, detail,
                       examples(repeat["row"]), "share")  # fmt: skip


def _leakage(train: pd.DataFrame, eval: pd.DataFrame, spec: DataSpec) -> CheckResult:
    """Eval prompts whose (normalised) conversation is also a train prompt."""
    seen = set(train["key"]) - {""}
    leaked = eval[eval["key"].isin(seen)]
    share = len(leaked) / len(eval) if len(eval) else 0.0
    hit = share > spec.checks.max_leakage_share
    verdict = fired(spec.checks.leakage, hit) if spec.checks.leakage != "off" else "pass"
    detail = f"{len(leaked)} eval prompts also appear (normalised) in train"
    threshold = f"<= {spec.checks.max_leakage_share:.2%}"
    return CheckResult("leakage", "eval", share, threshold, verdict, detail,
                       examples(leaked["row"]), "share")  # fmt: skip


def _token_lengths(split: str, frame, tokenizer, max_length: int, spec: DataSpec) -> CheckResult:
    """Rendered-conversation lengths; share whose response would be cut at max_length."""
    from tasks.core.training.sft import encode_pair, prompt_ids

    full = np.array(
        [
            len(encode_pair(tokenizer, list(c.prompt), c.response, 10**9)["input_ids"])
            for c in frame["conv"]
        ]
    )
    prompts = np.array([len(prompt_ids(tokenizer, list(c.prompt))) for c in frame["conv"]])
    cut = frame["row"][full > max_length].tolist()
    too_long = frame["row"][prompts >= max_length].tolist()
    share = len(cut) / len(frame) if len(frame) else 0.0
    severity = spec.checks.response_truncation
    hit = share > spec.checks.max_truncated_share or bool(too_long)
    verdict = fired(severity, hit) if severity != "off" else "pass"
    detail = (
        f"{len(cut)} conversations longer than train.max_length={max_length} tokens (response "
        f"cut); {len(too_long)} prompts alone reach it (no response left)"
    )
    stats = length_stats(full, max_length, spec.checks.report_lengths) if len(full) else {}
    return CheckResult("token_lengths", split, share,
                       f"<= {spec.checks.max_truncated_share:.2%}", verdict, detail,
                       examples(too_long or cut), "share", stats,
                       "raise train.max_length or shorten/drop those rows")  # fmt: skip


def _split_frames(spec: DataSpec, checks: list[CheckResult]) -> dict[str, pd.DataFrame]:
    if spec.split is None:
        frames = {s: map_split(s, spec.splits[s], spec, checks) for s in SPLITS}
        return {s: f for s, f in frames.items() if f is not None}
    whole = map_split("train", spec.train, spec, checks)
    if whole is None:
        return {}
    whole = whole.assign(text=whole["prompt"], label_id=0)  # same prompt: same side
    train, eval = split_rows(whole, spec.split.model_copy(update={"stratify": False}))
    checks.append(split_result(train, eval, spec.split))
    return {"train": train, "eval": eval}


def run_checks(spec: DataSpec, tokenizer=None, max_length: int = 128):
    """Both splits' conversation frames and every check's result."""
    checks: list[CheckResult] = []
    frames = _split_frames(spec, checks)
    for split, frame in frames.items():
        if spec.checks.duplicates != "off":
            checks.append(_duplicates(split, frame, spec))
        if tokenizer is not None and len(frame):
            checks.append(_token_lengths(split, frame, tokenizer, max_length, spec))
    if len(frames) == len(SPLITS):
        checks.append(_leakage(frames["train"], frames["eval"], spec))
    return frames, checks


def _sampled(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit and limit < len(frame):
        return frame.sample(n=limit, random_state=seed).sort_values("row")
    return frame


def fingerprints(rendered: dict[str, list[str]], template_sha: str) -> tuple[str, dict]:
    """sha256 over the template's sha256 and every rendered conversation, and per split."""
    digest = hashlib.sha256(f"chat-template {template_sha}\n".encode())
    per_split = {}
    for split in SPLITS:
        own = hashlib.sha256(f"chat-template {template_sha}\n".encode())
        digest.update(f"\n[{split}]\n".encode())
        for text in rendered[split]:
            line = (text.replace("\n", "\\n") + "\n").encode()
            digest.update(line)
            own.update(line)
        per_split[split] = own.hexdigest()
    return digest.hexdigest(), per_split


def prepare_sft(
    spec: DataSpec, out_root: Path, tokenizer=None, max_length: int = 128, tokenizer_name: str = ""
) -> DataReport:
    """Check and save both splits; nothing is saved when a check at severity fail fires."""
    frames, checks = run_checks(spec, tokenizer, max_length)
    template = chat_template_sha256(tokenizer)
    meta = {
        "tokenizer": tokenizer_name,
        "max_length": max_length if tokenizer else None,
        "preprocessing": Preprocessing.from_spec(spec).to_dict(),
        "sources": {s: source_uri(src) for s, src in spec.splits.items()},
        "name": spec.name,
        "chat_template_sha256": template,
        "system_prompt": spec.system_prompt or "",
    }
    kept = {}
    for split, frame in frames.items():
        limit = spec.splits[split].max_samples if spec.eval or split == "train" else None
        kept[split] = _sampled(frame, limit, spec.seed)
    rows = {s: len(f) for s, f in kept.items()}
    if any(c.verdict == "fail" for c in checks) or len(kept) < len(SPLITS):
        return DataReport("", (), rows, tuple(checks), "", **meta)
    rendered = {s: [render(tokenizer, c) for c in f["conv"]] for s, f in kept.items()}
    digest, digests = fingerprints(rendered, template)
    path = Path(out_root) / digest[:16]
    if not (path / "dataset_dict.json").is_file():
        tables = {
            split: Dataset.from_dict(
                {
                    "prompt": f["prompt"].tolist(),
                    "messages": [c.prompt_json() for c in f["conv"]],
                    "response": f["response"].tolist(),
                }
            )
            for split, f in kept.items()
        }
        DatasetDict(tables).save_to_disk(str(path))
    return DataReport(digest, (), rows, tuple(checks), str(path), digests=digests, **meta)
