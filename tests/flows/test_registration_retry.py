"""A retried registration never creates a second version for the same training run."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from prefect import flow

from tasks.core.config.evaluation import GateSpec
from tasks.core.config.experiment import RegistrySpec
from tasks.core.config.train import LoraSpec
from tasks.core.evaluation.gates import decide_gates
from tasks.core.evaluation.report import EvalReport, ModelScores
from tasks.core.tracking import client, ensure_experiment
from tasks.gate import EvalOutcome
from tasks.register import register_model
from tests.flows.conftest import TINY_REPO

pytestmark = pytest.mark.usefixtures("prefect_harness")
LABELS = ["negative", "positive"]
REGISTRY = RegistrySpec(model_name="retry-lora", experiment="tests")


def trained_run(home, revision) -> str:
    """A run holding an (untrained) adapter, as the fine-tune stage leaves it."""
    from tasks.core.training.modeling import (
        ModelRef,
        add_lora,
        load_base,
        load_tokenizer,
        save_adapter,
    )

    mlc = client(home.tracking_uri)
    experiment = ensure_experiment(mlc, "tests", home.mlflow_artifacts)
    run_id = mlc.create_run(experiment).info.run_id
    ref = ModelRef(TINY_REPO, revision)
    model = add_lora(load_base(ref, LABELS, home.hf_hub_cache), LoraSpec(r=2, alpha=4))
    folder = save_adapter(
        model, load_tokenizer(ref, home.hf_hub_cache), ref, LABELS, home.work_dir / run_id
    )
    mlc.log_artifacts(run_id, str(folder), "adapter")
    mlc.set_terminated(run_id)
    return run_id


def outcome_for(run_id: str) -> EvalOutcome:
    report = EvalReport(tuple(LABELS), ModelScores("candidate", run_id, {"accuracy": 0.9}))
    decision = decide_gates(report, GateSpec(absolute={"accuracy": 0.5}))
    return EvalOutcome(run_id, report.candidate.metrics, decision, report)


def versions(mlc, run_id: str) -> list[str]:
    return [str(v.version) for v in mlc.search_model_versions(f"run_id = '{run_id}'")]


def test_calling_the_task_twice_gives_one_version(home, mirrored):
    mlc = client(home.tracking_uri)
    run_id = trained_run(home, mirrored)
    tags = {"base_repo_id": TINY_REPO, "base_revision": mirrored, "git_commit": "abc"}
    first = register_model.fn(outcome_for(run_id), "adapter", REGISTRY, tags, home)
    again = register_model.fn(
        outcome_for(run_id), "adapter", REGISTRY, tags | {"git_commit": "def"}, home
    )
    assert (first.created, again.created) == (True, False)
    assert first.version == again.version == "1"
    assert versions(mlc, run_id) == ["1"]
    version = mlc.get_model_version(REGISTRY.model_name, "1")
    assert version.tags["git_commit"] == "def"  # the retry re-applies the tags
    assert mlc.get_registered_model(REGISTRY.model_name).aliases == {"challenger": 1}
    # One logged model in the run, reused rather than logged again.
    experiment = mlc.get_run(run_id).info.experiment_id
    logged = mlc.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert len(logged) == 1


def test_prefect_retry_after_a_failure_half_way_gives_one_complete_version(
    home, mirrored, monkeypatch
):
    mlc = client(home.tracking_uri)
    run_id = trained_run(home, mirrored)
    calls = []
    original = MlflowClient.update_model_version

    def flaky(self, name, version, description=None):
        """The version exists, then the description write fails once (a dropped connection)."""
        calls.append(version)
        if len(calls) == 1:
            raise ConnectionError("injected: registry went away after creating the version")
        return original(self, name, version, description)

    monkeypatch.setattr(MlflowClient, "update_model_version", flaky)

    @flow
    def register_with_retry():
        task = register_model.with_options(retries=2, retry_delay_seconds=0)
        return task(outcome_for(run_id), "adapter", REGISTRY, {"base_repo_id": TINY_REPO}, home)

    registration = register_with_retry()
    assert len(calls) == 2, "the task was retried once"
    assert registration.created is False  # the retry found the version the first try made
    assert versions(mlc, run_id) == [registration.version]
    version = mlc.get_model_version(REGISTRY.model_name, registration.version)
    assert version.description.startswith("# retry-lora")  # the card landed on the retry
    assert mlc.get_registered_model(REGISTRY.model_name).aliases["challenger"] == int(
        registration.version
    )


def test_retry_after_the_model_was_logged_reuses_it(home, mirrored, monkeypatch):
    """Failure between logging the model and registering it: the retry logs nothing new."""
    import mlflow

    mlc = client(home.tracking_uri)
    run_id = trained_run(home, mirrored)
    original, calls = mlflow.register_model, []

    def flaky(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise ConnectionError("injected: registry unreachable after the model was logged")
        return original(*args, **kwargs)

    monkeypatch.setattr(mlflow, "register_model", flaky)
    with pytest.raises(ConnectionError):
        register_model.fn(outcome_for(run_id), "adapter", REGISTRY, {}, home)
    assert versions(mlc, run_id) == []
    registration = register_model.fn(outcome_for(run_id), "adapter", REGISTRY, {}, home)
    assert registration.created and versions(mlc, run_id) == [registration.version]
    assert calls[0] == calls[1], "the retry registered the model the first attempt logged"
    experiment = mlc.get_run(run_id).info.experiment_id
    logged = mlc.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert len(logged) == 1
