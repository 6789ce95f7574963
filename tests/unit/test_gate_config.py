"""Gates from a policy file plus per-experiment overrides: merging, path resolution, errors.

The error table follows the loader's other tables (Axolotl style): a YAML fragment, and the
substrings its one-line message must hold; ``{file}`` is the file that set the bad key.
"""

from __future__ import annotations

import pytest

from tasks.core.config.loader import lineage, load_config, validate_file
from tasks.core.errors import ConfigError
from tests.unit.test_config_loader import SHIPPED_POLICY, STANDALONE, _write_data

SHIPPED_GATES = SHIPPED_POLICY.parent / "gates.yaml"
POLICY = """\
kind: gate-policy
version: "9"
gates:
  absolute: {accuracy: 0.6}
  non_inferiority: {metrics: [accuracy, macro_f1], margin: 0.02}
"""


@pytest.fixture
def experiment(tmp_path):
    """Write a standalone experiment (and a gate policy beside it); return a writer."""
    _write_data(tmp_path)
    (tmp_path / "policies").mkdir()

    def write(gates: str = "", policy: str = POLICY):
        (tmp_path / "policies" / "gates.yaml").write_text(policy)
        text = STANDALONE.format(policy=SHIPPED_POLICY) + gates
        path = tmp_path / "experiment.yaml"
        path.write_text(text)
        return path

    return write


def test_shipped_quickstart_gets_policy_defaults_and_its_overrides():
    loaded = load_config(SHIPPED_POLICY.parents[1] / "experiments/sst2-minilm-lora.yaml")
    gates = loaded.config.gates
    assert gates.policy_file == SHIPPED_GATES
    assert gates.absolute == {"accuracy": 0.80, "macro_f1": 0.80}  # the experiment's bar
    assert gates.non_inferiority.metrics == ("accuracy", "macro_f1")  # the policy's
    assert loaded.gate_policy.version == loaded.gate_policy_version
    tags = lineage(loaded)
    assert tags["gate_policy_version"] == loaded.gate_policy.version
    assert len(tags["gate_policy_sha256"]) == 64
    # The resolved config that travels to MLflow holds the effective gates.
    assert "non_inferiority" in loaded.resolved_yaml()


MERGE_CASES = [
    pytest.param("", {"accuracy": 0.6}, 0.02, ("accuracy", "macro_f1"), id="policy-only"),
    pytest.param(
        "  absolute: {macro_f1: 0.7}\n",
        {"accuracy": 0.6, "macro_f1": 0.7},
        0.02,
        ("accuracy", "macro_f1"),
        id="mapping-merges-key-by-key",
    ),
    pytest.param(
        "  non_inferiority: {margin: 0.1}\n",
        {"accuracy": 0.6},
        0.1,
        ("accuracy", "macro_f1"),
        id="override-one-key",
    ),
    pytest.param(
        "  non_inferiority: {metrics: []}\n", {"accuracy": 0.6}, 0.02, (), id="switch-off"
    ),
]


@pytest.mark.parametrize(("override", "absolute", "margin", "metrics"), MERGE_CASES)
def test_experiment_overrides_policy(experiment, override, absolute, margin, metrics):
    path = experiment("gates:\n  policy_file: policies/gates.yaml\n" + override)
    gates = load_config(path).config.gates
    assert gates.absolute == absolute
    assert gates.non_inferiority.margin == margin
    assert gates.non_inferiority.metrics == metrics


def test_without_policy_file_the_section_stands_alone(experiment):
    loaded = load_config(experiment("gates:\n  absolute: {accuracy: 0.7}\n"))
    assert loaded.gate_policy is None and loaded.gate_policy_version == ""
    assert loaded.config.gates.absolute == {"accuracy": 0.7}
    assert "gate_policy_version" not in lineage(loaded)


def test_golden_path_resolves_against_the_file_naming_it(experiment, tmp_path):
    (tmp_path / "policies" / "golden.jsonl").write_text('{"text": "x", "label": 0}\n')
    policy = POLICY + "  golden: {path: golden.jsonl}\n"
    gates = load_config(
        experiment("gates:\n  policy_file: policies/gates.yaml\n", policy)
    ).config.gates
    assert gates.golden.path == tmp_path / "policies" / "golden.jsonl"
    (tmp_path / "mine.jsonl").write_text('{"text": "y", "label": 1}\n')
    gates = load_config(
        experiment(
            "gates:\n  policy_file: policies/gates.yaml\n  golden: {path: mine.jsonl}\n", policy
        )
    ).config.gates
    assert gates.golden.path == tmp_path / "mine.jsonl"


ERRORS = [
    pytest.param(
        "gates:\n  policy_file: policies/nope.yaml\n",
        POLICY,
        "experiment",
        ["gates.policy_file: ", "gate policy file not found", "policies/nope.yaml"],
        id="missing-policy-file",
    ),
    pytest.param(
        "gates:\n  policy_file: policies/gates.yaml\n",
        POLICY.replace("margin: 0.02", "margn: 0.02"),
        "policy",
        ["gates.non_inferiority.margn: unknown key; allowed here: metrics, margin"],
        id="typo-in-policy-names-policy-file",
    ),
    pytest.param(
        "gates:\n  policy_file: policies/gates.yaml\n",
        POLICY.replace("gate-policy", "license-policy"),
        "policy",
        ["kind: ", "'gate-policy'"],
        id="wrong-kind",
    ),
    pytest.param(
        "gates:\n  policy_file: policies/gates.yaml\n",
        POLICY + "  policy_file: other.yaml\n",
        "policy",
        ["gates.policy_file"],
        id="policy-names-a-policy",
    ),
    pytest.param(
        "gates:\n  policy_file: policies/gates.yaml\n  maximum: {accuracy: 0.2}\n",
        POLICY,
        "experiment",
        [
            "gates.maximum: ",
            "unknown maximum gate metric 'accuracy'",
            "ece, latency_ms_per_example",
        ],
        id="maximum-on-a-score",
    ),
    pytest.param(
        "gates:\n  slices:\n    - {name: len, length_buckets: [5], column: label, minimum: 0.5}\n",
        POLICY,
        "experiment",
        ["gates.slices.0: ", "set exactly one of length_buckets and column"],
        id="slice-two-ways",
    ),
    pytest.param(
        "gates:\n  slices:\n    - {name: len, length_buckets: [20, 10], minimum: 0.5}\n",
        POLICY,
        "experiment",
        ["gates.slices.0: ", "increasing positive word counts"],
        id="slice-edges-unsorted",
    ),
    pytest.param(
        "gates:\n  slices:\n    - {name: len, length_buckets: [10], minimum: 0.5, min_exampls: 3}\n",
        POLICY,
        "experiment",
        ["gates.slices.0.min_exampls: unknown key", "min_examples"],
        id="slice-unknown-key",
    ),
    pytest.param(
        "gates:\n  base_model: {score: false, min_gain: 0.1}\n",
        POLICY,
        "experiment",
        ["gates.base_model: ", "min_gain is set but score is false"],
        id="gain-without-score",
    ),
    pytest.param(
        "gates:\n  golden: {path: nowhere.jsonl}\n",
        POLICY,
        "experiment",
        ["gates.golden.path: ", "golden file not found"],
        id="missing-golden-file",
    ),
    pytest.param(
        "gates:\n  non_inferiority: {margin: 2}\n",
        POLICY,
        "experiment",
        ["gates.non_inferiority.margin: ", "less than or equal to 1"],
        id="margin-out-of-range",
    ),
    pytest.param(
        "eval:\n  metrics: [accuracy, 'not a metric!']\n",
        POLICY,
        "experiment",
        ["eval.metrics: ", "'not a metric!' is neither a project metric"],
        id="bad-metric-name",
    ),
]


@pytest.mark.parametrize(("gates", "policy", "culprit", "expected"), ERRORS)
def test_gate_config_errors_are_one_line(experiment, tmp_path, gates, policy, culprit, expected):
    path = experiment(gates, policy)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    source = path if culprit == "experiment" else tmp_path / "policies" / "gates.yaml"
    assert message.startswith(f"{source}: "), message
    for fragment in expected:
        assert fragment in message, message


def test_validate_names_the_gate_policy():
    assert validate_file(SHIPPED_GATES).startswith("gate policy ")
