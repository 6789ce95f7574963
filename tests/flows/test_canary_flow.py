"""The promotion flow end to end: real Prefect engine, real MLflow registry, real models
served over HTTP on loopback, held-out examples replayed through it, real decisions."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.promote import promotion
from tasks.core.errors import CanaryRolledBack, RollbackImpossible
from tasks.core.home import Home
from tasks.core.promotion.canary_io import clear_lease, manual_rollback
from tasks.core.promotion.lease import LEASE_TAG
from tasks.core.registry.history import actor_canary, history, read_record
from tasks.core.registry.versions import PREVIOUS_CHAMPION, delete_alias
from tasks.core.tracking import client
from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO
from tests.serving.models import (
    SlowModel,
    prepared_eval,
    register_trained,
    register_version,
    train_adapter,
)
from tests.tiny import sentiment_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")
NAME = "tiny-canary"
# The shipped policy, made quick: small steps of traffic, fast registry polling.
POLICY = {
    "kind": "canary-policy",
    "version": "test-1",
    "steps": [10, 50, 100],
    "analysis": {
        "min_requests": 20,
        "min_feedback": 20,
        "settle_seconds": 60,
        "max_error_rate": 0.0,
        "max_p95_latency_ratio": 2.0,
        # Millisecond p95s of a tiny model on a busy machine jitter; 400 ms of injected
        # latency clears this by far.
        "p95_latency_tolerance_ms": 150,
        "min_agreement": 0.8,
        "max_accuracy_drop": 0.1,
    },
    "replay": {"max_requests": 800, "max_seconds": 60, "concurrency": 4},
    "serving": {"poll_seconds": 0.1, "max_wait_ms": 2},
}
# Every test but the latency one judges answers and records, not timing. On a loaded CI machine
# the 100 % step's p95 came out 5x the earlier steps' (1336 vs 270 ms: the step-3 baseline is
# measured in another time window), which rolled back a good challenger and, with it, the next
# test's setup. Those tests get a latency check that only an outage would fail.
RELAXED = {
    **POLICY,
    "analysis": {
        **POLICY["analysis"],
        "max_p95_latency_ratio": 20.0,
        "p95_latency_tolerance_ms": 10_000,
    },
}


@dataclass(frozen=True)
class World:
    home: Home
    policy: str  # latency judged loosely
    latency_policy: str  # latency judged as shipped: 400 ms clears it by far
    good: str  # first champion
    better: str  # another good model (different data and seed)
    flipped: str  # trained on flipped labels
    slow: str  # `better` + 400 ms per predict call, by config


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_template_db, tiny_bert_dir) -> World:
    from tasks.core.catalog.mirror import import_folder

    root = tmp_path_factory.mktemp("canary")
    home = Home(root / "home").ensure()
    shutil.copyfile(mlflow_template_db, home.mlflow_db)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LORAFLOW_HOME", str(home.root))
        mp.setenv("MLFLOW_TRACKING_URI", home.tracking_uri)
        mp.setenv("MLFLOW_REGISTRY_URI", home.tracking_uri)
        revision = import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache).revision
        mlc = client(home.tracking_uri)
        held_out = prepared_eval(sentiment_rows(64, seed=2), root / "eval")
        versions = {}
        for tag, rows, seed in [
            ("good", sentiment_rows(192, seed=1), 1),
            ("better", sentiment_rows(192, seed=3), 3),
            ("flipped", [(1 - y, t) for y, t in sentiment_rows(192, seed=4)], 4),
        ]:
            adapter = train_adapter(home.hf_hub_cache, revision, rows, root / tag, seed)
            versions[tag] = register_trained(mlc, NAME, adapter, held_out)
        slow = register_version(
            mlc,
            NAME,
            root / "better",
            run_id=versions["better"][1],
            python_model=SlowModel(),
            model_config={"delay_ms": 400},
        )
        policy, latency_policy = root / "canary.yaml", root / "canary-latency.yaml"
        policy.write_text(yaml.safe_dump(RELAXED))
        latency_policy.write_text(yaml.safe_dump(POLICY))
        yield World(
            home,
            str(policy),
            str(latency_policy),
            versions["good"][0],
            versions["better"][0],
            versions["flipped"][0],
            slow,
        )


def setup_aliases(world: World, champion: str | None, challenger: str) -> None:
    mlc = client(world.home.tracking_uri)
    for alias in ("champion", PREVIOUS_CHAMPION):
        delete_alias(mlc, NAME, alias)
    if champion:
        mlc.set_registered_model_alias(NAME, "champion", champion)
    mlc.set_registered_model_alias(NAME, "challenger", challenger)
    clear_lease(mlc, NAME)


def aliases(world: World) -> dict[str, str]:
    model = client(world.home.tracking_uri).get_registered_model(NAME)
    return {alias: str(version) for alias, version in model.aliases.items()}


def canary_runs(world: World, version: str):
    mlc = client(world.home.tracking_uri)
    experiment = mlc.get_experiment_by_name("tests")
    return mlc.search_runs(
        [experiment.experiment_id],
        f"tags.`loraflow.run_type` = 'canary' and tags.challenger_version = '{version}'",
    )


def artifacts(state) -> list:
    with get_client(sync_client=True) as prefect:
        return prefect.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])
            )
        )


def test_first_version_becomes_champion_directly(world):
    setup_aliases(world, champion=None, challenger=world.good)
    decision = promotion(model_name=NAME, policy_path=world.policy)
    assert decision.action == "promote" and "no champion yet" in decision.reason
    assert aliases(world)["champion"] == world.good
    assert canary_runs(world, world.good) == []  # nothing to compare with: no canary


def test_good_challenger_is_promoted_through_every_step(world):
    setup_aliases(world, champion=world.good, challenger=world.better)
    state = promotion(model_name=NAME, policy_path=world.policy, return_state=True)
    assert state.is_completed(), state.message
    decision = state.result()
    assert decision.action == "promote", decision.reason
    assert "after 3 steps (10 % -> 50 % -> 100 %)" in decision.reason
    assert aliases(world) == {
        "champion": world.better,
        "challenger": world.better,
        PREVIOUS_CHAMPION: world.good,
    }
    mlc = client(world.home.tracking_uri)
    assert LEASE_TAG not in mlc.get_registered_model(NAME).tags
    tags = mlc.get_model_version(NAME, world.better).tags
    assert tags["canary.outcome"] == "promote" and tags["promotion.action"] == "promote"

    [run] = canary_runs(world, world.better)
    assert run.data.tags["canary.outcome"] == "promote" and run.info.status == "FINISHED"
    percents = mlc.get_metric_history(run.info.run_id, "canary_percent")
    assert [(m.step, m.value) for m in percents] == [(1, 10.0), (2, 50.0), (3, 100.0)]
    records = history(mlc, NAME, world.better, kind="canary-step")
    assert [r.outcome for r in records] == ["continue", "continue", "promote"]
    assert {r.actor for r in records} == {actor_canary()}  # canary:<who ran it>
    for record in records:  # each step its own record, nested under the canary run
        assert mlc.get_run(record.run_id).data.tags["mlflow.parentRunId"] == run.info.run_id
    steps = [read_record(mlc, r.run_id)["details"] for r in records]
    for step in steps:
        assert {c["name"]: c["verdict"] for c in step["checks"]}["agreement"] == "pass"
        assert step["challenger"]["requests"] >= 20 and step["replay"]["failed"] == 0
    assert steps[0]["challenger"]["online_accuracy"] >= 0.85
    assert steps[2]["champion"]["requests"] == 0  # 100 %: judged against earlier steps

    keys = [a.key for a in artifacts(state)]
    assert keys.count("canary-step") == 3 and "promotion" in keys

    # `loraflow rollback NAME` restores the previous champion by hand.
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", "rollback", NAME, "--reason", "test"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"champion restored to v{world.good} (was v{world.better})" in done.stdout
    assert aliases(world) == {"champion": world.good}
    assert mlc.get_model_version(NAME, world.better).tags["promotion.action"] == "rolled back"
    (rollback,) = history(mlc, NAME, world.better, kind="rollback")
    assert rollback.actor.startswith("cli:") and rollback.reason.startswith("test (")
    with pytest.raises(RollbackImpossible, match="no 'previous-champion' alias"):
        manual_rollback(mlc, NAME, "again", "now")


def test_flipped_label_challenger_is_rolled_back_at_the_first_step(world):
    setup_aliases(world, champion=world.good, challenger=world.flipped)
    with pytest.raises(CanaryRolledBack, match=r"step 1 \(10 %\): .*agreement = 0\.\d+"):
        promotion(model_name=NAME, policy_path=world.policy)
    assert aliases(world) == {"champion": world.good}  # champion unchanged, challenger removed
    mlc = client(world.home.tracking_uri)
    assert LEASE_TAG not in mlc.get_registered_model(NAME).tags
    tags = mlc.get_model_version(NAME, world.flipped).tags
    assert tags["canary.outcome"] == "rollback" and tags["promotion.action"] == "rollback"
    assert tags["canary.failed_check"] == "agreement"
    figures = json.loads(tags["canary.figures"])
    assert figures["step"] == 1 and figures["agreement"] < 0.5
    assert figures["challenger"]["online_accuracy"] < 0.5
    [run] = canary_runs(world, world.flipped)
    steps = history(mlc, NAME, world.flipped, kind="canary-step")
    assert [(r.outcome, r.reason[:6]) for r in steps] == [("rollback", "step 1")]
    (outcome,) = history(mlc, NAME, world.flipped, kind="canary-outcome")
    assert outcome.outcome == "rollback" and "agreement" in outcome.reason

    # A version a canary rolled back is not tried again.
    mlc.set_registered_model_alias(NAME, "challenger", world.flipped)
    decision = promotion(model_name=NAME, policy_path=world.policy)
    assert decision.action == "noop" and "rolled back by a canary" in decision.reason


def test_slow_challenger_is_rolled_back_on_latency(world):
    setup_aliases(world, champion=world.good, challenger=world.slow)
    with pytest.raises(CanaryRolledBack, match="p95_latency_ratio"):
        promotion(model_name=NAME, policy_path=world.latency_policy)
    assert aliases(world) == {"champion": world.good}
    tags = client(world.home.tracking_uri).get_model_version(NAME, world.slow).tags
    assert tags["canary.failed_check"] == "p95_latency_ratio"
    figures = json.loads(tags["canary.figures"])
    assert figures["step"] == 1 and figures["challenger"]["p95_ms"] >= 400
    checks = {c["name"]: c["verdict"] for c in figures["checks"]}
    assert checks["agreement"] == "pass"  # healthy answers, just slow


def lineage_of(world: World, version: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", "lineage", f"{NAME}@{version}", "--no-config"],
        cwd=REPO,
        env={**os.environ, "COLUMNS": "400"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_rollback_promote_rollback_each_stays_in_the_history(world):
    """A hand rollback is not lost at the version's next promotion: all three show in order."""
    from tasks.core.promotion.rollback import rollback_champion

    setup_aliases(world, champion=world.good, challenger=world.better)
    mlc = client(world.home.tracking_uri)
    before = len(history(mlc, NAME, world.better))
    assert promotion(model_name=NAME, policy_path=world.policy).action == "promote"
    rollback_champion(mlc, NAME, "first rollback: p99 alarm", "cli:alice")
    assert aliases(world)["champion"] == world.good
    again = promotion(model_name=NAME, version=world.better, policy_path=world.policy)
    assert again.action == "promote" and aliases(world)["champion"] == world.better
    rollback_champion(mlc, NAME, "second rollback: complaints", "cli:bob")

    decisions = history(mlc, NAME, world.better)[before:]
    outcomes = [(d.kind, d.outcome, d.actor) for d in decisions if d.kind != "canary-step"]
    assert outcomes == [
        ("canary-outcome", "promote", actor_canary()),
        ("rollback", "rolled back", "cli:alice"),
        ("canary-outcome", "promote", actor_canary()),
        ("rollback", "rolled back", "cli:bob"),
    ]
    shown = lineage_of(world, world.better)
    assert "rolled back at" in shown and "by cli:bob: second rollback" in shown  # the latest
    table = shown[shown.index("Decisions about") :]
    assert table.index("first rollback") < table.index("second rollback")
    assert "cli:alice" in shown and "cli:bob" in shown
    assert "by the pipeline" not in shown


def test_no_canary_while_the_error_budget_is_spent(world):
    """Flipped feedback spends the quality budget of the running service: the promotion flow
    refuses (a Refusal: exit 3) before any traffic moves, and records why on the version."""
    import httpx

    from tasks.core.config.canary import ServingSpec
    from tasks.core.errors import ErrorBudgetExhausted
    from tasks.core.serving.runner import BackgroundServer, build_service

    setup_aliases(world, champion=world.good, challenger=world.better)
    spec = ServingSpec(poll_seconds=0.1, max_wait_ms=2)
    service = BackgroundServer(build_service(NAME, spec, world.home.tracking_uri))
    with service as server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready(60)
        texts = [text for _, text in sentiment_rows(20, seed=9)]
        answer = http.post("/predict", json={"texts": texts, "key": "k"}).json()
        flipped = [
            {"id": p["id"], "label": "negative" if p["label"] == "positive" else "positive"}
            for p in answer["predictions"]
        ]
        assert http.post("/feedback", json={"items": flipped}).json()["accepted"] == 20
        with pytest.raises(ErrorBudgetExhausted, match="quality -5.67 left") as refused:
            promotion(model_name=NAME, policy_path=world.policy, service_url=server.url)
    assert refused.value.exit_code == 3
    assert aliases(world)["champion"] == world.good  # nothing moved
    [record] = history(client(world.home.tracking_uri), NAME, world.better, kind="promotion")[-1:]
    assert record.outcome == "refused" and "error budget exhausted" in record.reason
