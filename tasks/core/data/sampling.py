"""Shape the mapped rows: split one file into train and eval, drop repeats, draw subsets.

A user with one labelled file expects what Axolotl, AutoTrain or LLaMA-Factory do: an eval
fraction, seeded and stratified by class. Rows that repeat a text (exactly or once
normalised) form a group that goes to one side as a whole; otherwise the same text would be
trained on and evaluated, and the eval figures would flatter the model. No library splits by
group *and* stratum to a given fraction (scikit-learn's ``StratifiedGroupKFold`` gives 1/k
folds only), so ``split_rows`` assigns whole groups greedily per class. Subsets
(``max_samples``) use ``datasets``' own stratified index generator (``subset``); the
token-length check counts the rows it will draw (``sample_positions``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from datasets import Dataset

from tasks.core.config.data import SplitFraction
from tasks.core.data.report import CheckResult, examples


def split_rows(frame: pd.DataFrame, spec: SplitFraction) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) frames of ``frame`` (columns ``key``, ``label_id``): whole groups per side.

    Groups are rows sharing a comparison key (exact repeats share it too); a group's stratum
    is its first row's class. Within each stratum groups are shuffled by ``seed`` and moved to
    eval while that brings the stratum's eval rows closer to ``eval_fraction``.
    """
    rng = np.random.default_rng(spec.seed)
    key = frame["key"].where(frame["key"] != "", frame["text"])  # punctuation-only: own text
    groups = pd.DataFrame({"group": key.to_numpy(), "label": frame["label_id"].to_numpy()})
    sizes = groups.groupby("group", sort=True).agg(rows=("label", "size"), label=("label", "first"))
    strata = sizes["label"].astype(object).where(sizes["label"].notna(), -1)
    if not spec.stratify:
        strata = pd.Series(0, index=sizes.index)
    to_eval: set = set()
    for _, members in sizes.groupby(strata, sort=True):
        order = rng.permutation(len(members))
        target, taken = spec.eval_fraction * members["rows"].sum(), 0
        for pos in order:
            size = int(members["rows"].iat[pos])
            if abs(taken + size - target) < abs(taken - target):
                to_eval.add(members.index[pos])
                taken += size
    in_eval = key.isin(to_eval).to_numpy()
    return frame[~in_eval], frame[in_eval]


def split_result(train: pd.DataFrame, eval: pd.DataFrame, spec: SplitFraction) -> CheckResult:
    total = len(train) + len(eval)
    share = len(eval) / total if total else 0.0
    shared = eval["key"].isin(set(train["key"]) - {""}).sum()
    how = "stratified by class" if spec.stratify else "not stratified"
    detail = (
        f"{len(eval):,} of {total:,} rows to eval ({share:.1%}; asked {spec.eval_fraction:.1%}), "
        f"seed {spec.seed}, {how}; repeated texts kept on one side ({int(shared)} shared)"
    )
    return CheckResult(
        "split", "eval", share, f"{spec.eval_fraction:.1%} of rows", "pass", detail, (), "share"
    )


def dedupe(split: str, frame: pd.DataFrame, mode: str) -> tuple[pd.DataFrame, CheckResult]:
    """``frame`` without rows repeating an earlier row's text (or key) and label; the count."""
    columns = ["text", "label_id"] if mode == "exact" else ["key", "label_id"]
    comparable = frame["text"] != ""
    repeat = frame.duplicated(columns, keep="first") & comparable
    if mode == "normalized":
        repeat |= frame.duplicated(["text", "label_id"], keep="first") & comparable
    dropped = frame.loc[repeat, "row"].tolist()
    kept = frame[~repeat]
    how = "exactly" if mode == "exact" else "once case, punctuation and spacing are ignored"
    detail = (
        f"dropped {len(dropped):,} of {len(frame):,} rows repeating an earlier row's text "
        f"and label {how}; {len(kept):,} kept"
    )
    result = CheckResult(
        "dedupe", split, len(dropped), f"mode {mode}", "pass", detail, examples(dropped)
    )
    return kept, result


def subset(table: Dataset, limit: int, seed: int) -> Dataset:
    """``limit`` rows of ``table``, each class keeping its share (plain shuffle if it cannot:
    a class with a single row, or fewer rows asked for than there are classes).

    The same rows as ``table.train_test_split(train_size=limit, stratify_by_column="label",
    seed=seed)["train"]`` (``sample_positions`` over the label column straight from Arrow: the
    method reads it row by row, 2 s on SST-2).
    """
    if limit >= len(table):
        return table
    labels = table.data.column("label").to_numpy()
    if table._indices is not None:  # a selection of the table: its rows, in its order
        labels = labels[table._indices.column("indices").to_numpy()]
    return table.select(sample_positions(labels, limit, seed))


def sample_positions(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Positions of the ``limit`` rows ``subset`` draws from rows of these class ids, in its
    order: ``datasets``' own stratified index generator with the same seeded generator, or
    ``Dataset.shuffle(seed)``'s permutation where it cannot stratify."""
    if limit >= len(labels):
        return np.arange(len(labels))
    from datasets.utils.stratify import stratified_shuffle_split_generate_indices

    rng = np.random.default_rng(seed)
    try:
        train, _ = next(
            stratified_shuffle_split_generate_indices(labels, limit, len(labels) - limit, rng=rng)
        )
    except ValueError:
        return np.random.default_rng(seed).permutation(len(labels))[:limit]
    return train
