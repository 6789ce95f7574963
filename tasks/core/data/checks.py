"""The data checks: each returns a CheckResult with a figure, a threshold and example rows.

Per-split row rules (the mapped columns exist and have usable types, no empty text, every label
a class) are declared as pandera schemas and validated lazily, so one pass collects every
failing row with its index. Checks that compare rows with each other or across splits
(duplicates, conflicting labels, leakage, class balance, label sets) are pandas group-bys over
whole columns. Row numbers in results are 1-based data rows (the header line not counted).
"""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandas.api.types import is_bool_dtype, is_integer_dtype, is_string_dtype

from tasks.core.config.data import DataChecksSpec, SplitSpec
from tasks.core.data.pii import PiiScan
from tasks.core.data.report import CheckResult, examples, fired


def _is_text_column(series: pd.Series) -> bool:
    return is_string_dtype(series) or series.isna().all()


def _is_label_column(series: pd.Series) -> bool:
    if is_bool_dtype(series):
        return False
    if is_integer_dtype(series) or is_string_dtype(series) or series.isna().all():
        return True
    values = series.dropna()
    return bool(values.map(lambda v: isinstance(v, int | str) and not isinstance(v, bool)).all())


def columns_contract(split: str, spec: SplitSpec) -> pa.DataFrameSchema:
    """The mapped columns must exist; text must be strings, labels ints or class names."""
    return pa.DataFrameSchema(
        {
            spec.text_column: pa.Column(
                nullable=True, checks=pa.Check(_is_text_column, name="text_type")
            ),
            spec.label_column: pa.Column(
                nullable=True, checks=pa.Check(_is_label_column, name="label_type")
            ),
        },
        name=split,
    )


def rows_contract(split: str, checks: DataChecksSpec) -> pa.DataFrameSchema:
    """Row rules over the mapped frame (``text`` normalised, ``label_id`` NA if no class)."""
    text_checks = []
    if checks.empty_text != "off":
        text_checks.append(pa.Check(lambda s: s.str.len() > 0, name="empty_text"))
    label_checks = []
    if checks.labels != "off":
        label_checks.append(pa.Check(lambda s: s.notna(), name="labels", ignore_na=False))
    return pa.DataFrameSchema(
        {
            "text": pa.Column(str, checks=text_checks),
            "label_id": pa.Column("Int64", nullable=True, checks=label_checks),
        },
        name=split,
    )


def failing_rows(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> dict[str, list]:
    """{check name: failure cases} from one lazy validation (an empty dict when all pass)."""
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
        return {
            name: list(zip(group["index"], group["failure_case"], strict=True))
            for name, group in cases.groupby("check", sort=False)
        }
    return {}


def check_schema(
    split: str, frame: pd.DataFrame, spec: SplitSpec, severity: str
) -> tuple[CheckResult, bool]:
    """The schema result and whether the split can be mapped (columns present, types usable)."""
    expected = [spec.text_column, spec.label_column]
    failures = failing_rows(columns_contract(split, spec), frame)
    absent = {case for _, case in failures.get("column_in_dataframe", [])}
    missing = [c for c in expected if c in absent]
    found = list(frame.columns)
    if missing:
        detail = (
            f"{spec.source} has columns {found}; expected {expected} "
            f"(missing {missing}: map them with text_column / label_column)"
        )
        return CheckResult(
            "schema", split, len(missing), "0 columns", "fail", detail, (), "columns"
        ), False
    mistyped = [
        f"{column} holds {frame[column].dtype}, expected {kind}"
        for column, kind, name in (
            (spec.text_column, "text (strings)", "text_type"),
            (spec.label_column, "class ids (int) or class names (str)", "label_type"),
        )
        if name in failures
    ]
    if mistyped:
        verdict = fired(severity, True)
        action = "stop" if verdict == "fail" else "cast and go on"
        detail = f"{spec.source}: {'; '.join(mistyped)} ({action})"
        result = CheckResult(
            "schema", split, len(mistyped), "0 columns", verdict, detail, (), "columns"
        )
        return result, verdict != "fail"
    detail = f"columns {expected} present with usable types"
    return CheckResult("schema", split, 0, "0 columns", "pass", detail, (), "columns"), True


def check_rows(
    split: str, frame: pd.DataFrame, raw_labels: pd.Series, names: list[str], checks: DataChecksSpec
) -> list[CheckResult]:
    """empty_text and labels over the mapped frame, one lazy pandera pass."""
    failures = failing_rows(rows_contract(split, checks), frame)
    results = []
    if checks.empty_text != "off":
        rows = sorted(int(i) + 1 for i, _ in failures.get("empty_text", []))
        results.append(
            CheckResult(
                "empty_text",
                split,
                len(rows),
                "0 rows",
                fired(checks.empty_text, bool(rows)),
                f"{len(rows)} empty or whitespace-only texts",
                examples(rows),
            )
        )
    if checks.labels != "off":
        rows = sorted(int(i) + 1 for i, _ in failures.get("labels", []))
        unknown = sorted({str(raw_labels.iat[r - 1]) for r in rows})
        verdict = fired(checks.labels, bool(rows))
        detail = f"{len(rows)} labels not in {names} or ids 0..{len(names) - 1}"
        if rows:
            detail += f": {unknown[:5]}" + ("" if verdict == "fail" else " (rows dropped)")
        results.append(
            CheckResult("labels", split, len(rows), "0 rows", verdict, detail, examples(rows))
        )
    return results


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def check_duplicates(split: str, frame: pd.DataFrame, checks: DataChecksSpec) -> list[CheckResult]:
    """Exact and normalised repeats of (text, label), and texts carrying different labels.

    ``frame`` holds ``text``, ``key`` (comparison key), ``label_id`` and ``row`` (1-based),
    restricted to rows with a text and a valid label.
    """
    results = []
    total = len(frame)
    limit = f"max {checks.max_duplicate_share:.1%} of rows"
    exact = frame.duplicated(["text", "label_id"], keep="first")
    if checks.duplicates != "off":
        rows = frame.loc[exact, "row"].tolist()
        share = _share(len(rows), total)
        detail = (
            f"{len(rows)} of {total:,} rows ({share:.2%}) repeat an earlier row's text and label"
        )
        results.append(
            CheckResult(
                "duplicates",
                split,
                share,
                limit,
                fired(checks.duplicates, share > checks.max_duplicate_share),
                detail,
                examples(rows),
                "share",
            )
        )
    keyed = frame[frame["key"] != ""]
    if checks.normalized_duplicates != "off":
        near = keyed.duplicated(["key", "label_id"], keep="first") & ~exact.loc[keyed.index]
        rows = keyed.loc[near, "row"].tolist()
        share = _share(len(rows), total)
        detail = (
            f"{len(rows)} of {total:,} rows ({share:.2%}) repeat an earlier row's text and label "
            "once case, punctuation and spacing are ignored"
        )
        results.append(
            CheckResult(
                "normalized_duplicates",
                split,
                share,
                limit,
                fired(checks.normalized_duplicates, share > checks.max_duplicate_share),
                detail,
                examples(rows),
                "share",
            )
        )
    if checks.conflicting_labels != "off":
        labels_per_key = keyed.groupby("key")["label_id"].transform("nunique")
        conflicting = keyed[labels_per_key > 1]
        rows = conflicting["row"].tolist()
        detail = f"{len(rows)} rows in {conflicting['key'].nunique()} texts carry different labels"
        if rows:
            first = conflicting[conflicting["key"] == conflicting["key"].iat[0]]
            detail += (
                f" (e.g. {first['text'].iat[0]!r} in rows {', '.join(map(str, first['row'][:3]))})"
            )
        results.append(
            CheckResult(
                "conflicting_labels",
                split,
                len(rows),
                "0 rows",
                fired(checks.conflicting_labels, bool(rows)),
                detail,
                examples(rows),
            )
        )
    return results


def check_balance(
    split: str, ids: pd.Series, names: list[str], checks: DataChecksSpec
) -> CheckResult:
    """The rarest class's share among the classes the split holds (absent ones: label_set)."""
    counts = ids.dropna().astype(int).value_counts()
    total = int(counts.sum())
    shares = {names[i]: _share(int(n), total) for i, n in sorted(counts.items())}
    rarest = min(shares, key=shares.get) if shares else None
    figure = shares[rarest] if rarest else 0.0
    detail = (
        f"rarest class {rarest!r}: {figure:.1%} ({int(counts.min())} of {total:,} rows); shares "
        + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
        if rarest
        else "no labelled rows"
    )
    return CheckResult(
        "class_balance",
        split,
        figure,
        f"min {checks.min_class_share:.1%} per class",
        fired(checks.class_balance, figure < checks.min_class_share),
        detail,
        (),
        "share",
        {"shares": shares},
    )


def check_label_set(
    train: pd.DataFrame, eval: pd.DataFrame, names: list[str], severity: str
) -> CheckResult:
    """Train and eval hold the same classes, and every configured class occurs in both."""
    in_train = set(train["label_id"].dropna().astype(int))
    in_eval = set(eval["label_id"].dropna().astype(int))
    configured = set(range(len(names)))
    missing = configured - (in_train & in_eval)
    unseen = sorted(in_eval - in_train)
    parts = []
    if unseen:
        parts.append(f"eval classes never seen in train: {[names[i] for i in unseen]}")
    if in_train - in_eval:
        parts.append(
            f"train classes missing from eval: {[names[i] for i in sorted(in_train - in_eval)]}"
        )
    if configured - in_train - in_eval:
        parts.append(
            f"classes in neither split: {[names[i] for i in sorted(configured - in_train - in_eval)]}"
        )
    rows = eval.loc[eval["label_id"].isin(unseen), "row"].tolist()
    return CheckResult(
        "label_set",
        "eval",
        len(missing),
        "0 classes missing",
        fired(severity, bool(missing)),
        "; ".join(parts) or f"train and eval both hold all {len(names)} classes",
        examples(rows),
        "classes",
    )


def check_leakage(
    train: pd.DataFrame, eval: pd.DataFrame, checks: DataChecksSpec
) -> list[CheckResult]:
    """Eval rows whose text is in train: verbatim, or only once normalised."""
    results = []
    total = len(eval)
    limit = f"max {checks.max_leakage_share:.1%} of eval rows"
    # {text: first train row}; reversed so the first occurrence wins. Python sets and dicts
    # beat Series.isin on Arrow strings here by an order of magnitude.
    first_train_row = dict(zip(train["text"][::-1], train["row"][::-1], strict=True))
    exact = eval["text"].map(lambda text: text in first_train_row).astype(bool)
    if checks.leakage != "off":
        leaked = eval[exact]
        share = _share(len(leaked), total)
        detail = f"{len(leaked)} of {total:,} eval rows ({share:.2%}) appear verbatim in train"
        if len(leaked):
            detail += f" (eval row {leaked['row'].iat[0]} = train row {first_train_row[leaked['text'].iat[0]]})"
        results.append(
            CheckResult(
                "leakage",
                "eval",
                share,
                limit,
                fired(checks.leakage, share > checks.max_leakage_share),
                detail,
                examples(leaked["row"]),
                "share",
            )
        )
    if checks.normalized_leakage != "off":
        train_keys = dict(zip(train["key"][::-1], train["row"][::-1], strict=True))
        train_keys.pop("", None)  # punctuation-only texts have no key to compare
        near = eval["key"].map(lambda key: key in train_keys).astype(bool) & ~exact
        leaked = eval[near]
        share = _share(len(leaked), total)
        detail = (
            f"{len(leaked)} of {total:,} eval rows ({share:.2%}) match a train text once case, "
            f"punctuation and spacing are ignored ({int(exact.sum())} more verbatim)"
        )
        if len(leaked):
            detail += (
                f" (eval row {leaked['row'].iat[0]} ~ train row {train_keys[leaked['key'].iat[0]]})"
            )
        results.append(
            CheckResult(
                "normalized_leakage",
                "eval",
                share,
                limit,
                fired(checks.normalized_leakage, share > checks.max_leakage_share),
                detail,
                examples(leaked["row"]),
                "share",
            )
        )
    return results


PII_HINT = (
    "to go on: data.pii.policy: redact (each find becomes [KIND], in training and at "
    "serving) or warn (keep the texts as they are); or narrow data.pii.kinds"
)


def check_pii(
    split: str, found: PiiScan, policy: str, regions: tuple[str, ...] = ()
) -> CheckResult:
    """Rows holding PII; also rows whose phone-like numbers no configured region confirms."""
    rows = sorted(pos + 1 for pos in found.rows)
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(found.kinds.items()))
    detail = f"{len(rows)} rows hold PII or secrets" + (f": {kinds}" if rows else "")
    if rows and policy == "redact":
        detail += " (redacted in place in the prepared data)"
    verdict = fired("fail" if policy == "fail" else "warn", bool(rows))
    unconfirmed = sorted(pos + 1 for pos in found.unconfirmed_phones)
    if unconfirmed:
        detail += (
            f"; {len(unconfirmed)} rows hold phone-like numbers that no region in "
            f"data.pii.phone_regions ({', '.join(regions)}) confirms (rows "
            f"{', '.join(map(str, unconfirmed[:5]))}): add their region to phone_regions"
        )
        verdict = "fail" if verdict == "fail" else "warn"
    stats = {
        "kinds": dict(found.kinds),
        "redacted": policy == "redact" and bool(rows),
        "unconfirmed_phone_rows": len(unconfirmed),
    }
    return CheckResult(
        "pii", split, len(rows), "0 rows", verdict, detail, examples(rows), "rows", stats, PII_HINT
    )
