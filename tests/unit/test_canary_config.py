"""The canary policy file and the experiment's canary section: table-driven validation."""

from __future__ import annotations

import pytest
import yaml

from tasks.core.config.loader import load_canary_policy, load_config, validate_file
from tasks.core.errors import ConfigError
from tasks.core.promotion import decision as promotion
from tests.unit.conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "configs/policies/canary.yaml"
MINIMAL = {"kind": "canary-policy", "version": "1"}


def test_shipped_policy_validates():
    policy = load_canary_policy(SHIPPED)
    assert policy.steps == (10, 50, 100)
    assert validate_file(SHIPPED) == "canary policy 2026.11-1: steps 10% -> 50% -> 100%"


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ({"steps": [50, 10, 100]}, ["steps", "must increase"]),
        ({"steps": [10, 50]}, ["steps", "last step must be 100"]),
        ({"steps": [0, 100]}, ["steps", "(0, 100]"]),
        ({"steps": []}, ["steps", "at least 1"]),
        ({"analysis": {"min_agreement": 1.5}}, ["analysis.min_agreement", "less than or equal"]),
        ({"analysis": {"max_p95_latency_ratio": 0.5}}, ["max_p95_latency_ratio"]),
        ({"analysis": {"min_agrement": 0.8}}, ["unknown key", "min_agreement"]),
        ({"replay": {"concurrency": 0}}, ["replay.concurrency"]),
        ({"serving": {"max_batch_size": 0}}, ["serving.max_batch_size"]),
        ({"serving": {"port": 80}}, ["serving.port", "unknown key", "max_wait_ms"]),
        ({"kind": "license-policy"}, ["kind"]),
    ],
)
def test_bad_policy_is_one_line_naming_file_and_key(tmp_path, override, fragments):
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(MINIMAL | override))
    with pytest.raises(ConfigError) as info:
        load_canary_policy(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_defaults_fill_a_minimal_policy(tmp_path):
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    policy = load_canary_policy(path)
    assert policy.analysis.min_agreement == 0.8 and policy.serving.poll_seconds == 2


def test_experiment_names_its_canary_policy_relative_to_itself(tmp_path):
    quickstart = REPO_ROOT / "configs/experiments/sst2-minilm-lora.yaml"
    loaded = load_config(quickstart)
    assert loaded.config.canary.policy_file == SHIPPED
    assert loaded.canary_policy == load_canary_policy(SHIPPED)

    missing = tmp_path / "child.yaml"
    missing.write_text(f"extends: {quickstart}\ncanary:\n  policy_file: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"canary.policy_file: .*policy file not found"):
        load_config(missing)
    off = tmp_path / "off.yaml"
    off.write_text(f"extends: {quickstart}\ncanary:\n  policy_file: null\n")
    assert load_config(off).canary_policy is None


PROMOTION_CASES = [
    pytest.param(("1", None), {"canary": True}, "promote", id="first-champion-even-with-canary"),
    pytest.param(("2", "1"), {"canary": True}, "canary", id="champion-exists-canary"),
    pytest.param(("2", "1"), {}, "keep", id="champion-exists-no-policy-waits"),
    pytest.param(("2", "2"), {"canary": True}, "noop", id="already-champion"),
    pytest.param(
        ("3", "1"), {"canary": True, "rolled_back": "agreement = 0.1"}, "noop", id="rolled-back"
    ),
]


@pytest.mark.parametrize(("versions", "options", "action"), PROMOTION_CASES)
def test_promotion_plan(versions, options, action):
    decision = promotion.decide_promotion(*versions, **options)
    assert decision.action == action
    if options.get("rolled_back"):
        assert options["rolled_back"] in decision.reason


def test_docs_hold_the_current_policy_reference():
    from tasks.core.config.reference import policy_reference

    doc = (REPO_ROOT / "docs/canary.md").read_text()
    block = doc.split("<!-- policy-reference -->\n")[1].split("<!-- /policy-reference -->")[0]
    assert block == policy_reference(), "regenerate the table in docs/canary.md"
