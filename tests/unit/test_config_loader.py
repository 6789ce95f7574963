"""Experiment YAML loading: ``extends`` chains, path resolution, one-line errors, hashing.

Error tests are tables of (description, YAML, expected substrings of the one-line message), in
the style of Axolotl's config validation tests. ``{file}`` in an expected substring stands for
the absolute path of the file under test, ``{dir}`` for its folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from tasks.core.config.audit import LicensePolicy
from tasks.core.config.experiment import ExperimentConfig
from tasks.core.config.loader import (
    MAX_EXTENDS_DEPTH,
    deep_merge,
    git_commit,
    lineage,
    load_config,
    load_policy,
    read_yaml,
    section_hash,
    validate_file,
)
from tasks.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIGS = REPO_ROOT / "configs"
SHIPPED_EXPERIMENT = CONFIGS / "experiments" / "sst2-minilm-lora.yaml"
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SHIPPED_POLICY = CONFIGS / "policies" / "licenses.yaml"
SHIPPED_YAMLS = sorted(CONFIGS.glob("**/*.yaml"))

VALID_APPROVAL = """\
license:
  approvals:
    - subject: model:acme/widget
      license: other
      approved_by: Jane Doe
      date: "2026-01-15"
      reason: internal evaluation only, legal signed off
"""

# A complete config that extends nothing; data files are written beside it by the test.
STANDALONE = """\
name: standalone
license:
  policy_file: {policy}
data:
  name: tiny
  labels: [negative, positive]
  train:
    path: train.tsv
    text_column: sentence
    label_column: label
  eval:
    path: dev.tsv
    text_column: sentence
    label_column: label
registry:
  model_name: standalone
"""


def _child(override: str) -> str:
    return f"extends: {SHIPPED_EXPERIMENT}\n{override}"


def _write_data(folder: Path) -> None:
    (folder / "train.tsv").write_text("label\tsentence\n0\tbad\n1\tgood\n")
    (folder / "dev.tsv").write_text("label\tsentence\n1\tfine\n0\tawful\n")


def _expand(parts: list[str], file: Path) -> list[str]:
    return [p.format(file=file, dir=file.parent) for p in parts]


def _load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    return message


# --------------------------------------------------------------------------------------------
# Error table 1: a child of the shipped experiment with one bad override.
# --------------------------------------------------------------------------------------------

OVERRIDE_ERRORS = [
    pytest.param(
        "unknown key in a section lists the allowed keys",
        "train:\n  lerning_rate: 0.1\n",
        [
            "{file}: train.lerning_rate: unknown key; allowed here: ",
            "epochs",
            "learning_rate",
            "batch_size",
            "logging_steps",
        ],
        id="unknown-key",
    ),
    pytest.param(
        "unknown top-level key lists the sections",
        "epochs: 3\n",
        [
            "{file}: epochs: unknown key; allowed here: name, description, discovery, license, "
            "data, lora, train, eval, gates, registry"
        ],
        id="unknown-top-level-key",
    ),
    pytest.param(
        "unknown key three levels down",
        "data:\n  train:\n    text_col: text\n",
        ["{file}: data.train.text_col: unknown key", "text_column", "label_column", "max_samples"],
        id="unknown-nested-key",
    ),
    pytest.param(
        "unknown key inside a list item lists that item's keys",
        VALID_APPROVAL + "      approver: someone\n",
        [
            "{file}: license.approvals.0.approver: unknown key; allowed here: ",
            "subject",
            "approved_by",
            "reason",
        ],
        id="unknown-key-in-list-item",
    ),
    pytest.param(
        "wrong type: string for an int",
        "train:\n  batch_size: lots\n",
        ["{file}: train.batch_size: ", "valid integer", "(got 'lots')"],
        id="wrong-type-int",
    ),
    pytest.param(
        "wrong type: string for a list",
        "lora:\n  target_modules: query\n",
        ["{file}: lora.target_modules: ", "valid list", "(got 'query')"],
        id="wrong-type-list",
    ),
    pytest.param(
        "wrong type: mapping expected",
        "train: 5\n",
        ["{file}: train: ", "valid dictionary", "(got 5)"],
        id="wrong-type-section",
    ),
    pytest.param(
        "number out of its bound",
        "train:\n  batch_size: 0\n",
        ["{file}: train.batch_size: ", "greater than or equal to 1", "(got 0)"],
        id="out-of-bound",
    ),
    pytest.param(
        "bad Literal: scheduler",
        "train:\n  lr_scheduler: step\n",
        ["{file}: train.lr_scheduler: ", "'linear', 'cosine' or 'constant'", "(got 'step')"],
        id="literal-scheduler",
    ),
    pytest.param(
        "bad Literal: data format",
        "data:\n  train:\n    format: xlsx\n",
        ["{file}: data.train.format: ", "'csv', 'tsv', 'json', 'jsonl' or 'parquet'", "'xlsx'"],
        id="literal-format",
    ),
    pytest.param(
        "bad Literal: task",
        "discovery:\n  task: summarization\n",
        ["{file}: discovery.task: ", "'text-classification'", "(got 'summarization')"],
        id="literal-task",
    ),
    pytest.param(
        "unknown gate metric",
        "gates:\n  absolute:\n    f1: 0.9\n",
        ["{file}: gates.absolute: ", "unknown gate metric 'f1'", "allowed: accuracy, macro_f1"],
        id="gate-unknown-metric",
    ),
    pytest.param(
        "gate threshold above 1",
        "gates:\n  absolute:\n    accuracy: 80\n",
        ["{file}: gates.absolute: ", "gate accuracy = 80", "outside [0, 1]"],
        id="gate-above-1",
    ),
    pytest.param(
        "gate threshold below 0",
        "gates:\n  absolute:\n    macro_f1: -0.1\n",
        ["{file}: gates.absolute: ", "gate macro_f1 = -0.1", "outside [0, 1]"],
        id="gate-below-0",
    ),
    pytest.param(
        "missing data file, resolved against the child's folder",
        "data:\n  eval:\n    path: missing/dev.tsv\n",
        ["{file}: data.eval.path: ", "data file not found: {dir}/missing/dev.tsv"],
        id="missing-data-file",
    ),
    pytest.param(
        "missing policy file, resolved against the child's folder",
        "license:\n  policy_file: policies/none.yaml\n",
        ["{file}: license.policy_file: ", "policy file not found: {dir}/policies/none.yaml"],
        id="missing-policy-file",
    ),
    pytest.param(
        "revision without repo_id",
        "discovery:\n  repo_id: null\n  revision: main\n",
        ["{file}: discovery: ", "'revision' is set but 'repo_id' is not"],
        id="revision-without-repo-id",
    ),
    pytest.param(
        "repo id not ORG/NAME",
        "discovery:\n  repo_id: just-a-name\n",
        ["{file}: discovery.repo_id: ", "should match pattern", "(got 'just-a-name')"],
        id="bad-repo-id",
    ),
    pytest.param(
        "experiment name not a slug",
        "name: my experiment\n",
        ["{file}: name: ", "letters, digits", "(got 'my experiment')"],
        id="bad-name",
    ),
    pytest.param(
        "duplicate class names",
        "data:\n  labels: [neg, neg]\n",
        ["{file}: data.labels: ", "class names must be unique"],
        id="duplicate-labels",
    ),
    pytest.param(
        "approval reason too short",
        VALID_APPROVAL.replace("internal evaluation only, legal signed off", "ok"),
        ["{file}: license.approvals.0.reason: ", "at least 10 characters"],
        id="approval-reason-short",
    ),
    pytest.param(
        "a key written twice is an error, not a silent override",
        "train:\n  batch_size: 8\n  batch_size: 100000000\n",
        ["{file}: line 4 not valid YAML: duplicate key 'batch_size' (first set on line 3)"],
        id="duplicate-key",
    ),
]


@pytest.mark.parametrize(("description", "override", "expected"), OVERRIDE_ERRORS)
def test_override_error_is_one_line_naming_file_key_value(
    description, override, expected, write_yaml
):
    path = write_yaml("exp.yaml", _child(override))
    message = _load_error(path)
    for part in _expand(expected, path):
        assert part in message, f"{description}: {part!r} not in {message!r}"


# --------------------------------------------------------------------------------------------
# Error table 2: whole files (standalone configs, broken YAML, extends chains).
# The file loaded is always exp.yaml; "{base}" is the shipped experiment.
# --------------------------------------------------------------------------------------------

FILE_ERRORS = [
    pytest.param(
        "extends is not a path",
        {"exp.yaml": "extends: 3\nname: x\n"},
        ["{file}: extends: must be a relative file path, got 3"],
        id="extends-not-a-string",
    ),
    pytest.param(
        "missing required key (standalone config without registry)",
        {"exp.yaml": STANDALONE.replace("registry:\n  model_name: standalone\n", "")},
        ["{file}: registry: required key is missing"],
        id="missing-required-section",
    ),
    pytest.param(
        "missing required nested key",
        {"exp.yaml": STANDALONE.replace("    text_column: sentence\n", "", 1)},
        ["{file}: data.train: text_column + label_column go together: text_column is missing"],
        id="missing-required-nested-key",
    ),
    pytest.param(
        "invalid YAML names the line (tab indentation)",
        {"exp.yaml": "extends: {base}\nname: x\ntrain:\n\tepochs: 1\n"},
        ["{file}: line 4 not valid YAML", "'\\t'"],
        id="invalid-yaml-tab",
    ),
    pytest.param(
        "invalid YAML names the line (unclosed list)",
        {"exp.yaml": "extends: {base}\ntrain: [1, 2\nlora:\n  r: 4\n"},
        ["{file}: line 3 not valid YAML", "expected ',' or ']'"],
        id="invalid-yaml-unclosed",
    ),
    pytest.param(
        "top level is a list",
        {"exp.yaml": "- name: x\n- name: y\n"},
        ["{file}: top level must be a mapping of keys, got list"],
        id="top-level-list",
    ),
    pytest.param(
        "top level is a string",
        {"exp.yaml": "just some text\n"},
        ["{file}: top level must be a mapping of keys, got str"],
        id="top-level-str",
    ),
    pytest.param(
        "top level is an empty list",
        {"exp.yaml": "[]\n"},
        ["{file}: top level must be a mapping of keys, got list"],
        id="top-level-empty-list",
    ),
    pytest.param(
        "top level is 0",
        {"exp.yaml": "0\n"},
        ["{file}: top level must be a mapping of keys, got int"],
        id="top-level-zero",
    ),
    pytest.param(
        "a parent that is not a mapping names the parent",
        {"exp.yaml": "extends: parent.yaml\nname: x\n", "parent.yaml": "- a\n"},
        ["{dir}/parent.yaml: top level must be a mapping of keys, got list"],
        id="parent-not-a-mapping",
    ),
    pytest.param(
        "extends loop between two files",
        {"exp.yaml": "extends: other.yaml\n", "other.yaml": "extends: exp.yaml\n"},
        ["{file}: 'extends' chain loops or is deeper than 8"],
        id="extends-loop",
    ),
    pytest.param(
        "file extends itself",
        {"exp.yaml": "extends: ./exp.yaml\nname: x\n"},
        ["{file}: 'extends' chain loops"],
        id="extends-self",
    ),
    pytest.param(
        "data file whose format cannot be told from its suffix",
        {
            "exp.yaml": "extends: {base}\ndata:\n  train:\n    path: notes.txt\n",
            "notes.txt": "label\tsentence\n0\tbad\n",
        },
        ["{file}: data.train: ", "cannot tell the format of notes.txt", "set 'format'"],
        id="unknown-data-format",
    ),
    pytest.param(
        "config file not found",
        {},
        ["{file}: config file not found"],
        id="file-not-found",
    ),
    pytest.param(
        "extends a file that does not exist",
        {"exp.yaml": "extends: nowhere/base.yaml\nname: x\n"},
        ["{dir}/nowhere/base.yaml: config file not found"],
        id="extends-missing-file",
    ),
]


@pytest.mark.parametrize(("description", "files", "expected"), FILE_ERRORS)
def test_file_error_is_one_line(description, files, expected, tmp_path, write_yaml):
    _write_data(tmp_path)
    for name, text in files.items():
        write_yaml(name, text.format(base=SHIPPED_EXPERIMENT, policy=SHIPPED_POLICY))
    path = tmp_path / "exp.yaml"
    message = _load_error(path)
    for part in _expand(expected, path):
        assert part in message, f"{description}: {part!r} not in {message!r}"


def test_standalone_config_with_relative_data_loads(tmp_path, write_yaml):
    _write_data(tmp_path)
    path = write_yaml("exp.yaml", STANDALONE.format(policy=SHIPPED_POLICY))
    loaded = load_config(path)
    assert loaded.config.data.train.path == tmp_path / "train.tsv"
    assert loaded.sources == (path,)


def test_extends_depth_limit(tmp_path, write_yaml):
    _write_data(tmp_path)
    write_yaml("l0.yaml", STANDALONE.format(policy=SHIPPED_POLICY))
    for i in range(1, MAX_EXTENDS_DEPTH + 1):
        write_yaml(f"l{i}.yaml", f"extends: l{i - 1}.yaml\ndescription: layer {i}\n")
    deepest_ok = tmp_path / f"l{MAX_EXTENDS_DEPTH - 1}.yaml"
    loaded = load_config(deepest_ok)
    assert len(loaded.sources) == MAX_EXTENDS_DEPTH
    assert loaded.config.description == f"layer {MAX_EXTENDS_DEPTH - 1}"
    too_deep = tmp_path / f"l{MAX_EXTENDS_DEPTH}.yaml"
    assert f"deeper than {MAX_EXTENDS_DEPTH}" in _load_error(too_deep)


# --------------------------------------------------------------------------------------------
# Which file an error names.
# --------------------------------------------------------------------------------------------


def test_error_names_the_middle_file_that_defined_the_bad_key(tmp_path, write_yaml):
    mid = write_yaml("mid.yaml", _child("train:\n  batch_sizes: 3\n"))
    child = write_yaml("child.yaml", "extends: mid.yaml\ntrain:\n  epochs: 2\nlora:\n  r: 4\n")
    message = _load_error(child)
    assert message.startswith(f"{mid}: train.batch_sizes: unknown key")
    assert str(child) not in message
    assert str(SHIPPED_EXPERIMENT) not in message


def test_error_names_the_child_not_the_base(write_yaml):
    child = write_yaml("child.yaml", _child("train:\n  batch_size: -1\n"))
    message = _load_error(child)
    assert message.startswith(f"{child}: train.batch_size:")
    assert "base.yaml" not in message
    assert str(SHIPPED_EXPERIMENT) not in message


def test_bad_value_in_parent_is_blamed_on_parent_when_child_sets_a_sibling(write_yaml):
    parent = write_yaml("parent.yaml", _child("train:\n  lr_scheduler: sawtooth\n"))
    child = write_yaml("child.yaml", "extends: parent.yaml\ntrain:\n  epochs: 3\n")
    message = _load_error(child)
    assert message.startswith(f"{parent}: train.lr_scheduler:")


def test_several_errors_are_joined_on_one_line(write_yaml):
    path = write_yaml("exp.yaml", _child("train:\n  batch_size: 0\n  colour: red\n"))
    message = _load_error(path)
    assert "train.batch_size" in message and "train.colour" in message
    assert message.count(f"{path}:") == 2 and "; " in message


# --------------------------------------------------------------------------------------------
# Merging and path resolution.
# --------------------------------------------------------------------------------------------


def test_shipped_experiment_merges_over_base():
    loaded = load_config(SHIPPED_EXPERIMENT)
    cfg = loaded.config
    assert loaded.sources == (CONFIGS / "base.yaml", SHIPPED_EXPERIMENT)
    assert cfg.name == "sst2-minilm-lora"
    assert cfg.discovery.repo_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.discovery.max_parameters == 150_000_000  # from base
    assert cfg.train.learning_rate == pytest.approx(2e-3)  # overridden
    assert cfg.train.warmup_ratio == pytest.approx(0.06)  # kept from base
    assert cfg.data.train.max_samples == 8000  # merged into the base's train split
    assert cfg.data.train.text_column == "sentence"
    assert cfg.data.eval.text_column == "content"
    assert cfg.gates.absolute == {"accuracy": 0.8, "macro_f1": 0.8}
    # Paths in base.yaml resolve against configs/, whatever the working directory.
    assert cfg.data.train.path.is_absolute() and cfg.data.train.path.is_file()
    assert cfg.license.policy_file == SHIPPED_POLICY
    assert loaded.license_policy.kind == "license-policy"
    assert loaded.license_policy_sha256 == hashlib.sha256(SHIPPED_POLICY.read_bytes()).hexdigest()


def test_relative_paths_resolve_against_the_declaring_file(tmp_path, monkeypatch):
    project = tmp_path / "project"
    configs = project / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "policies").mkdir()
    shutil.copy(SHIPPED_POLICY, configs / "policies" / "licenses.yaml")
    (project / "data").mkdir()
    _write_data(project / "data")
    (project / "other").mkdir()
    (project / "other" / "dev.csv").write_text("label,sentence\n0,meh\n")
    (configs / "base.yaml").write_text(
        STANDALONE.format(policy="policies/licenses.yaml")
        .replace("path: train.tsv", "path: ../data/train.tsv")
        .replace("path: dev.tsv", "path: ../data/dev.tsv")
    )
    exp = configs / "experiments" / "exp.yaml"
    exp.write_text("extends: ../base.yaml\ndata:\n  eval:\n    path: ../../other/dev.csv\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(Path("..") / "project" / "configs" / "experiments" / "exp.yaml")
    cfg = loaded.config
    assert cfg.data.train.path == project / "data" / "train.tsv"  # against configs/
    assert cfg.data.eval.path == project / "other" / "dev.csv"  # against experiments/
    assert cfg.data.eval.resolved_format == "csv"
    assert cfg.data.eval.text_column == "sentence"  # the rest of the split still merged
    assert cfg.license.policy_file == configs / "policies" / "licenses.yaml"
    assert loaded.sources == (configs / "base.yaml", exp)


def test_absolute_paths_stay_as_written(tmp_path, write_yaml):
    data = tmp_path / "abs"
    data.mkdir()
    _write_data(data)
    path = write_yaml("sub/exp.yaml", _child(f"data:\n  eval:\n    path: {data / 'dev.tsv'}\n"))
    assert load_config(path).config.data.eval.path == data / "dev.tsv"


def test_deep_merge_merges_mappings_and_replaces_everything_else():
    base = {"a": {"x": 1, "y": [1, 2]}, "b": 1}
    override = {"a": {"y": [3]}, "c": {"z": None}}
    merged = deep_merge(base, override)
    assert merged == {"a": {"x": 1, "y": [3]}, "b": 1, "c": {"z": None}}
    assert base == {"a": {"x": 1, "y": [1, 2]}, "b": 1}, "inputs are not mutated"


def test_read_yaml_treats_an_empty_file_as_empty_mapping(write_yaml):
    assert read_yaml(write_yaml("empty.yaml", "# only a comment\n")) == {}


# --------------------------------------------------------------------------------------------
# Immutability and hashing.
# --------------------------------------------------------------------------------------------


def test_models_are_frozen():
    loaded = load_config(SHIPPED_EXPERIMENT)
    with pytest.raises(ValidationError, match="frozen"):
        loaded.config.train.batch_size = 1
    with pytest.raises(ValidationError, match="frozen"):
        loaded.config.name = "other"
    with pytest.raises(ValidationError, match="frozen"):
        loaded.license_policy.version = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.config = None  # type: ignore[misc]


def test_sha256_is_stable_for_the_same_content(tmp_path):
    text = _child("train:\n  epochs: 2\n")
    first, second = tmp_path / "a" / "exp.yaml", tmp_path / "b" / "exp.yaml"
    for path in (first, second):
        path.parent.mkdir()
        path.write_text(text)
    a, b = load_config(first), load_config(second)
    assert HEX64.match(a.sha256)
    assert a.sha256 == b.sha256 == load_config(first).sha256
    assert a.sha256 == section_hash(a.config)


@pytest.mark.parametrize(
    ("section", "override"),
    [
        ("lora", "lora:\n  r: 4\n"),
        ("train", "train:\n  epochs: 2\n"),
        ("gates", "gates:\n  absolute:\n    accuracy: 0.9\n"),
        ("discovery", "discovery:\n  max_candidates: 2\n"),
    ],
)
def test_sha256_changes_with_a_section_and_only_that_section_hash(section, override, write_yaml):
    reference = load_config(write_yaml("ref.yaml", _child("")))
    changed = load_config(write_yaml("changed.yaml", _child(override)))
    assert changed.sha256 != reference.sha256
    for name in ExperimentConfig.model_fields:
        before = section_hash(getattr(reference.config, name))
        after = section_hash(getattr(changed.config, name))
        assert (before != after) == (name == section), name


def test_section_hash_is_canonical():
    assert section_hash({"a": 1, "b": [1, 2]}) == section_hash({"b": [1, 2], "a": 1})
    assert section_hash({"a": 1}) != section_hash({"a": 2})
    train = load_config(SHIPPED_EXPERIMENT).config.train
    assert section_hash(train) == section_hash(train.model_dump(mode="json"))
    assert HEX64.match(section_hash(None))


def test_resolved_yaml_round_trips():
    loaded = load_config(SHIPPED_EXPERIMENT)
    again = ExperimentConfig.model_validate(yaml.safe_load(loaded.resolved_yaml()))
    assert again == loaded.config
    assert section_hash(again) == loaded.sha256


def test_lineage_records_config_policy_and_code(tmp_path):
    loaded = load_config(SHIPPED_EXPERIMENT)
    tags = lineage(loaded)
    assert tags["config_file"] == str(SHIPPED_EXPERIMENT)
    assert tags["config_sha256"] == loaded.sha256
    assert tags["license_policy_version"] == loaded.license_policy.version
    assert tags["license_policy_sha256"] == loaded.license_policy_sha256
    assert tags["git_commit"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}", tags["git_commit"])
    assert git_commit(tmp_path) == "unknown"


# --------------------------------------------------------------------------------------------
# Every shipped YAML validates (required).
# --------------------------------------------------------------------------------------------


def test_configs_folder_ships_the_known_files():
    names = {p.relative_to(CONFIGS).as_posix() for p in SHIPPED_YAMLS}
    assert {"base.yaml", "experiments/sst2-minilm-lora.yaml", "policies/licenses.yaml"} <= names


@pytest.mark.parametrize(
    "path", SHIPPED_YAMLS, ids=[p.relative_to(CONFIGS).as_posix() for p in SHIPPED_YAMLS]
)
def test_every_shipped_config_validates(path):
    summary = validate_file(path)
    assert summary.startswith(
        (
            "experiment ",
            "license policy ",
            "gate policy ",
            "canary policy ",
            "monitoring policy ",
            "slo policy ",
        )
    ), summary
    assert "\n" not in summary


def test_validate_file_summaries():
    assert validate_file(SHIPPED_EXPERIMENT) == (
        "experiment sst2-minilm-lora: model sentence-transformers/all-MiniLM-L6-v2, "
        "data sst2, registry sst2-minilm-lora"
    )
    assert validate_file(CONFIGS / "base.yaml") == (
        "experiment base: model discovered (text-classification), data sst2, registry loraflow-base"
    )
    assert validate_file(SHIPPED_POLICY).startswith("license policy 2026.11-2: ")


# --------------------------------------------------------------------------------------------
# License policy files.
# --------------------------------------------------------------------------------------------

POLICY = {
    "kind": "license-policy",
    "version": "1",
    "intended_use": "commercial",
    "allow": ["mit", "apache-2.0"],
    "review": ["other"],
    "deny": ["agpl-3.0"],
}

POLICY_ERRORS = [
    pytest.param(
        {"deny": ["agpl-3.0", "mit"]}, ["'mit' is in both allow and deny"], id="allow-deny"
    ),
    pytest.param(
        {"review": ["agpl-3.0"]}, ["'agpl-3.0' is in both review and deny"], id="rev-deny"
    ),
    pytest.param({"review": ["mit"]}, ["'mit' is in both allow and review"], id="allow-review"),
    pytest.param(
        {"allow": ["mit", "MIT"]},
        ["'MIT' is listed twice in allow"],
        id="same-id-two-spellings",
    ),
    pytest.param(
        {"deny": ["AGPL-3.0-only", "Apache-2.0"]},
        ["'Apache-2.0' is in both allow and deny"],
        id="spdx-and-hub-tag",
    ),
    pytest.param(
        {"intended_use": "personal"}, ["intended_use", "'commercial' or 'research'"], id="use"
    ),
    pytest.param({"kind": "policy"}, ["kind", "'license-policy'"], id="kind"),
    pytest.param({"allow": None}, ["allow", "valid list"], id="allow-null"),
    pytest.param({"extra": 1}, ["extra: unknown key", "allow, review, deny"], id="unknown-key"),
]


def test_valid_policy_model():
    policy = LicensePolicy.model_validate(POLICY)
    assert policy.review == ("other",)
    assert (
        LicensePolicy.model_validate({k: v for k, v in POLICY.items() if k != "review"}).review
        == ()
    )


@pytest.mark.parametrize(("change", "expected"), POLICY_ERRORS)
def test_policy_model_rejects(change, expected):
    with pytest.raises(ValidationError) as info:
        LicensePolicy.model_validate(POLICY | change)
    if "listed twice" in expected[0] or "is in both" in expected[0]:
        assert expected[0] in str(info.value)


@pytest.mark.parametrize(("change", "expected"), POLICY_ERRORS)
def test_policy_file_errors_name_the_policy_file(change, expected, write_yaml):
    path = write_yaml("policy.yaml", yaml.safe_dump(POLICY | change))
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    for part in expected:
        assert part in message
    with pytest.raises(ConfigError):
        validate_file(path)


def test_experiment_with_an_invalid_policy_names_the_policy_file(write_yaml):
    policy = write_yaml("policies/bad.yaml", yaml.safe_dump(POLICY | {"review": ["mit"]}))
    exp = write_yaml("exp.yaml", _child("license:\n  policy_file: policies/bad.yaml\n"))
    message = _load_error(exp)
    assert message.startswith(f"{policy}: ")
    assert "'mit' is in both allow and review" in message


# --------------------------------------------------------------------------------------------
# Approvals.
# --------------------------------------------------------------------------------------------


def test_approval_with_quoted_date_loads(write_yaml):
    loaded = load_config(write_yaml("exp.yaml", _child(VALID_APPROVAL)))
    (approval,) = loaded.config.license.approvals
    assert approval.subject == "model:acme/widget"
    assert approval.date == "2026-01-15"


def test_approval_with_unquoted_yaml_date_loads(write_yaml):
    loaded = load_config(write_yaml("exp.yaml", _child(VALID_APPROVAL.replace('"', ""))))
    assert loaded.config.license.approvals[0].date == "2026-01-15"
