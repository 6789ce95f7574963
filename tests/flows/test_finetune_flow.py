"""The whole finetune flow under a real Prefect engine, real MLflow (SQLite) and a real model."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from prefect.client.schemas.sorting import TaskRunSort

from flows.finetune import finetune
from tasks.core.errors import GateFailed, LicenseDenied
from tasks.core.monitoring.profile import ARTIFACT as PROFILE_ARTIFACT
from tasks.core.registry.history import history, read_record
from tasks.core.tracking import client
from tests.flows.conftest import TINY_REPO, settled_task_runs, write_config

pytestmark = pytest.mark.usefixtures("prefect_harness")
# Task run names start with the stage's verb ("fine-tune org/model on ...").
STAGES = {
    "discover": "discover",
    "audit": "audit-licenses",
    "validate": "validate-data",
    "fine-tune": "fine-tune",
    "score": "score-base",
    "evaluate": "evaluate-gate",
    "register": "register",
    "serving": "serving-form",
    "export": "export-serving-form",
    "promote": "promote",
}


def task_states(state) -> dict[str, str]:
    """{stage: state name} of the task runs of the flow run behind ``state``."""
    runs = settled_task_runs(
        state.state_details.flow_run_id, sort=TaskRunSort.EXPECTED_START_TIME_ASC
    )
    return {STAGES.get(run.name.split(" ", 1)[0], run.name): run.state.name for run in runs}


def training_runs(mlc):
    experiment = mlc.get_experiment_by_name("tests").experiment_id
    return [
        r
        for r in mlc.search_runs([experiment])
        if r.data.tags.get("loraflow.run_type") == "training"
    ]


def test_pipeline_runs_caches_and_gates(home, mirrored, tmp_path):
    mlc = client(home.tracking_uri)
    config = write_config(tmp_path)

    # 1. First run: every stage runs for real.
    state = finetune(config_path=str(config), return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    states = task_states(state)
    assert len(states) == 10 and set(states.values()) == {"Completed"}, states
    # The serving form was exported while the registration ran; the stage recorded it and
    # removed the work copy.
    assert "export-serving-form" in states
    assert not list((home.work_dir / "serving-forms").iterdir())

    runs = training_runs(mlc)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_id == summary["run_id"]
    assert run.data.params["lora.r"] == "4"
    assert run.data.params["base_revision"] == mirrored
    assert len(mlc.get_metric_history(run.info.run_id, "train_loss")) >= 2
    evaluation = mlc.get_run(summary["evaluation_record"])  # its own record, under the run
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert 0.0 <= evaluation.data.metrics["eval_accuracy"] <= 1.0
    assert "eval_macro_f1" in evaluation.data.metrics
    artifacts = {a.path for a in mlc.list_artifacts(run.info.run_id, "adapter")}
    assert "adapter/adapter_model.safetensors" in artifacts

    versions = mlc.search_model_versions("name = 'tiny-lora'")
    assert [str(v.version) for v in versions] == ["1"]
    tags = versions[0].tags
    assert tags["base_repo_id"] == TINY_REPO and tags["base_revision"] == mirrored
    assert tags["dataset_sha256"] == summary["dataset_sha256"] and len(tags["dataset_sha256"]) == 64
    assert tags["license_verdict"] == "allow" and tags["gate_decision"] == "pass"
    model = mlc.get_registered_model("tiny-lora")
    assert model.aliases == {"challenger": 1, "champion": 1}
    # The serving form's decision: its own record of the history, indexed on the version.
    (record,) = history(mlc, "tiny-lora", "1", kind="serving-form")
    assert tags["serving_form.record"] == record.run_id and record.outcome == tags["serving_form"]
    assert record.train_run_id == run.info.run_id
    form = mlflow.artifacts.load_dict(f"runs:/{record.run_id}/serving_form/decision.json")
    assert tags["serving_form"] == form["chosen"] and form["min_agreement"] == 0.99
    assert tags["serving_form.passed"] == str(form["passed"]).lower()
    tried = [f["form"] for f in form["forms"]]  # the policy's order, up to the first pass
    assert tried in (["onnx-int8-token"], ["onnx-int8-token", "onnx-fp32"])
    figures = mlc.get_run(record.run_id).data.metrics
    assert figures["exact.ms_per_example"] == form["exact_ms_per_example"] > 0  # to beat
    assert record.config_sha256 == tags["config_sha256"] != ""  # as the version's others
    first = form["forms"][0]
    if first["examples"]:  # faster than the exact model here: judged on the split
        assert first["examples"] == evaluation.data.metrics["eval_examples"]
        assert "onnx-int8-token.agreement" in figures
    else:  # not faster (timed on a sample, the machine's load decides): not scored, says why
        assert "not faster" in first["reasons"][0]
        assert "onnx-int8-token.agreement" not in figures
        assert "onnx-int8-token.ms_per_example" in figures
    assert (form["chosen"] == "exact") == (not any(f["passed"] for f in form["forms"]))
    # How the evaluation was computed: on its record (the training run is not written to).
    eval_tags = evaluation.data.tags
    # The same rule for both, but int8 is for training only (evaluation scores fp32 there).
    trained = run.data.params["train.resolved_precision"]
    assert eval_tags["eval.resolved_precision"] == ("no" if trained == "int8" else trained)
    # The base was scored while the training processes ran; the evaluation read its scores.
    assert eval_tags["eval.base_scores_cached"] == "True"
    assert eval_tags["eval.champion_scores_cached"] == "False"  # no champion yet
    assert set(summary["compute_s"]) == {"training", "evaluation", "base_during_training"}
    assert summary["compute_s"]["training"] > 0 and summary["compute_s"]["evaluation"] > 0
    assert summary["compute_s"]["base_during_training"] > 0

    # The registered model loads offline from the mirror and predicts class names.
    loaded = mlflow.pyfunc.load_model("models:/tiny-lora@champion")
    predictions = loaded.predict(pd.DataFrame({"text": ["a good film", "a bad plot"]}))
    assert set(predictions["label"]) <= {"negative", "positive"}

    # The reference profile: in the evaluation record, and registered with the model (the
    # service counts OOV words against its vocabulary and sends the features it monitors).
    profile = read_record(mlc, evaluation.info.run_id, PROFILE_ARTIFACT)
    stats = profile["stats"]
    assert stats["count"] == 16 and sum(stats["predictions"].values()) == 16  # the eval split
    assert profile["accuracy"] == pytest.approx(evaluation.data.metrics["eval_accuracy"])
    assert len(stats["sketches"]) == 16 and stats["oov"] == 0 and stats["words"] == 64
    python_model = loaded.unwrap_python_model()
    assert python_model.vocabulary == frozenset(profile["vocabulary"])
    assert list(predictions.columns) == ["label", "score"]  # the public output is unchanged
    served = python_model.predict_texts(["a good film", "a bad plot"])  # as the service asks
    assert [label for label, _, _ in served] == predictions["label"].tolist()
    assert [(f.tokens, f.oov, len(f.sketch)) for _, _, f in served] == [(5, 0, 8), (5, 0, 8)]

    # 2. Identical re-run: every stage cached, nothing trained, registry unchanged.
    again = finetune(config_path=str(config), return_state=True)
    rerun = task_states(again)
    # score-base is not a cached task: it finds the base's scores in their file and is done.
    assert rerun.pop("score-base") == "Completed" and set(rerun.values()) == {"Cached"}, rerun
    assert "export-serving-form" not in rerun  # nothing trained: no early export
    assert len(training_runs(mlc)) == 1
    assert [str(v.version) for v in mlc.search_model_versions("name = 'tiny-lora'")] == ["1"]

    # 3. Only the gate threshold changes: evaluation onwards re-runs, training stays cached.
    accuracy = evaluation.data.metrics["eval_accuracy"]
    assert accuracy < 1.0, "tiny model unexpectedly perfect; the failing-gate step needs headroom"
    lower = write_config(
        tmp_path, "lower.yaml", gates={"absolute": {"accuracy": round(accuracy - 0.01, 4)}}
    )
    changed = task_states(finetune(config_path=str(lower), return_state=True))
    assert {changed[s] for s in ("discover", "audit-licenses", "validate-data", "fine-tune")} == {
        "Cached"
    }
    assert {
        changed[s] for s in ("score-base", "evaluate-gate", "register", "serving-form", "promote")
    } == {"Completed"}
    assert "export-serving-form" not in changed  # training cached: the stage exports itself
    latest = history(mlc, "tiny-lora", kind="evaluation")[-1]
    reevaluated = mlc.get_run(latest.run_id).data.tags
    assert reevaluated["eval.base_scores_cached"] == "True"  # the base was scored once
    assert [str(v.version) for v in mlc.search_model_versions("name = 'tiny-lora'")] == ["1"]
    # The re-check (already champion: noop) keeps the record of why version 1 became champion.
    tags = mlc.get_model_version("tiny-lora", "1").tags
    assert tags["promotion.action"] == "promote" and "no champion yet" in tags["promotion.reason"]

    # 4. A gate the model misses stops the flow before registration; aliases stay put.
    higher = write_config(tmp_path, "higher.yaml", gates={"absolute": {"accuracy": 1.0}})
    with pytest.raises(GateFailed, match="accuracy"):
        finetune(config_path=str(higher))
    assert [str(v.version) for v in mlc.search_model_versions("name = 'tiny-lora'")] == ["1"]
    assert mlc.get_registered_model("tiny-lora").aliases == {"challenger": 1, "champion": 1}

    # 5. --force recomputes: a new training run and a new version that waits for the canary.
    #    Started by a trigger: the event (and the monitor record) is the new version's cause.
    cause = "loraflow.drift.detected 0f0e-test record=abc123"
    forced = finetune(config_path=str(config), force=True, cause=cause, return_state=True)
    assert set(task_states(forced).values()) == {"Completed"}
    assert sorted(str(v.version) for v in mlc.search_model_versions("name = 'tiny-lora'")) == [
        "1",
        "2",
    ]
    aliases = mlc.get_registered_model("tiny-lora").aliases
    assert aliases == {"challenger": 2, "champion": 1}
    assert mlc.get_model_version("tiny-lora", "2").tags["promotion.action"] == "keep"
    assert mlc.get_model_version("tiny-lora", "2").tags["retrain.cause"] == cause
    assert "retrain.cause" not in mlc.get_model_version("tiny-lora", "1").tags
    # The champion (v1) was scored on this split as the candidate of its own evaluation: its
    # figures are read back, not recomputed, and they are the ones it had then.
    forced_eval = mlc.get_run(history(mlc, "tiny-lora", kind="evaluation")[-1].run_id).data
    assert forced_eval.tags["eval.champion_scores_cached"] == "True"
    assert forced_eval.metrics["champion_eval_accuracy"] == pytest.approx(accuracy)


def test_denied_license_stops_before_data_and_training(home, tmp_path, tiny_bert_dir):
    from tasks.core.catalog.mirror import import_folder
    from tests.tiny import build_tiny_bert

    nc = build_tiny_bert(tmp_path / "nc-bert", license="cc-by-nc-4.0")
    import_folder(nc, TINY_REPO, home.hf_hub_cache)
    config = write_config(tmp_path)
    state = finetune(
        config_path=str(config),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(LicenseDenied, match=r"CC-BY-NC-4.0 \(non-commercial\) is on the deny list"):
        state.result()
    states = task_states(state)
    assert "validate-data" not in states and "fine-tune" not in states
    mlc = client(home.tracking_uri)
    assert mlc.search_registered_models() == []
