"""Game day: the production loop closed on the real stack (tests/ops/conftest.py).

The stack's champion (trained, gated and registered by its finetune run, with its reference
profile) is served by `loraflow serve`; in-distribution traffic is replayed over two windows
(no finding), then shifted traffic (another domain, ten times longer) with flipped feedback:
`loraflow monitor` finds the drift and the accuracy decay, records them on the version, and
emits loraflow.drift.detected, whose deployment trigger on the real Prefect server creates a
retraining run that names the event and the record as its cause. The burn-rate alerts for the
same failure are tested on synthetic series by tests/monitoring/test_slo.py (promtool).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import httpx
import pytest
import yaml

from flows.cli.stack import prefect_client
from tasks.core.ops import stack as plan
from tasks.core.serving.runner import wait_ready
from tests.ops.conftest import BIN, run, wait_for
from tests.tiny import sentiment_rows

MODEL = "tiny-lora"
TRUTH = {0: "negative", 1: "positive"}
WINDOW = 200
# The shipped policy's tests with wider effect thresholds: the tiny champion's reference is its
# 16-example eval split, so class shares and accuracy carry +-0.25 of sampling noise there.
POLICY = {
    "kind": "monitoring-policy",
    "version": "game-day",
    "live": {"window": WINDOW},
    "drift": {"min_window": 100, "max_prediction_shift": 0.35, "max_ks": 0.5},
    "quality": {"min_feedback": 30, "max_accuracy_drop": 0.35},
}
DOMAIN = [
    "quarterly",
    "revenue",
    "grew",
    "while",
    "the",
    "semiconductor",
    "division",
    "reported",
    "weaker",
    "margins",
    "after",
    "supply",
    "constraints",
    "delayed",
    "shipments",
    "to",
    "automotive",
    "customers",
    "across",
    "several",
    "regions",
]


def shifted_texts(count: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choices(DOMAIN, k=40)) for _ in range(count)]


@pytest.fixture(scope="module")
def service(stack, tmp_path_factory):
    """`loraflow serve tiny-lora` on a free port, with the game day's live window."""
    folder = tmp_path_factory.mktemp("game-day")
    policy = folder / "monitoring.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    port = plan.free_port()
    log = (folder / "serve.log").open("w")
    process = subprocess.Popen(
        [str(BIN / "loraflow"), "serve", MODEL, "--port", str(port)]
        + ["--monitoring-policy", str(policy)],
        env=stack.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, 180)
        yield url, policy
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
        log.close()


def replay(url: str, texts: list[str], feedback) -> None:
    """Texts through /predict in batches; ``feedback(text_index, label)`` -> label or None."""
    with httpx.Client(base_url=url, timeout=60) as http:
        for start in range(0, len(texts), 32):
            batch = texts[start : start + 32]
            answer = http.post("/predict", json={"texts": batch}).json()
            items = []
            for i, p in enumerate(answer["predictions"]):
                label = feedback(start + i, p["label"])
                if label is not None:
                    items.append({"id": p["id"], "label": label})
            if items:
                assert http.post("/feedback", json={"items": items}).is_success


def monitor(stack, url: str, policy) -> str:
    """`loraflow monitor` as a user runs it on the stack's home: with no PREFECT_API_URL, it
    finds the stack's server itself (a server of its own would drop the breach event)."""
    assert "PREFECT_API_URL" not in stack.env
    return run(
        [str(BIN / "loraflow"), "monitor", MODEL, "--service-url", url, "--policy", str(policy)],
        stack.env,
        timeout=300,
    )


def test_in_distribution_windows_raise_no_alarm(stack, service):
    url, policy = service
    for seed in (21, 22):  # two full windows, one after the other
        rows = sentiment_rows(WINDOW, seed=seed)
        replay(url, [t for _, t in rows], lambda i, _label, rows=rows: TRUTH[rows[i][0]])
        out = monitor(stack, url, policy)
        assert re.search(rf"{MODEL} v\d+: ok; events emitted: none", out), out
        assert "breach" not in out.split("events emitted")[0], out


def test_monitor_deployment_runs_on_its_schedule_through_the_worker(stack, service):
    """`python -m flows.monitor` registers monitor/NAME on the policy's cron; a run of it goes
    through the stack's worker like any deployment (the window is in-distribution here)."""
    url, policy = service
    env = {**stack.env, "PREFECT_API_URL": stack.api}
    out = run(
        [str(BIN / "python"), "-m", "flows.monitor", MODEL, "--service-url", url]
        + ["--policy", str(policy)],
        env,
    )
    assert f"deployed monitor/{MODEL}" in out, out
    with prefect_client(stack.api) as client:
        deployment = client.read_deployment_by_name(f"monitor/{MODEL}")
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 * * * *" and deployment.work_pool_name == "cpu"
    started = run(
        [str(BIN / "prefect"), "deployment", "run", f"monitor/{MODEL}", "--watch"]
        + ["--watch-timeout", "240"],
        env,
        timeout=270,
    )
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started).group(1)
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with prefect_client(stack.api) as client:
        finished = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    assert finished.state.is_completed(), finished.state
    [report] = [a for a in artifacts if a.key == "monitor-report"]
    assert f"## Monitor `{MODEL}` v" in report.data and ": ok" in report.data, report.data


def test_shifted_traffic_is_found_recorded_and_starts_retraining(stack, service):
    url, policy = service
    flip = {"negative": "positive", "positive": "negative"}
    replay(url, shifted_texts(WINDOW, seed=5), lambda _i, label: flip[label])
    out = monitor(stack, url, policy)
    found = re.search(r"v(\d+): breach; events emitted: (.*); record (\w+)", out)
    assert found, out
    version, events, record = found.groups()
    assert "online_accuracy: breach" in out, out  # with its figure and threshold
    # The tiny model's untrained head scores everything 0.507 +- thousandths: its confidence
    # barely moves, within the check's numeric noise floor; reported, with its figure.
    assert re.search(r"confidence: (pass|breach) \d\.\d{4} \(threshold 0\.5\)", out), out
    assert re.search(r"online_accuracy: breach \d\.\d{4} \(threshold 0\.35\)", out), out
    # The stack's champion is served in its ONNX form when that passed its gate: it counts
    # tokens and OOV words as the exact form does, but gives no embedding (that check skips).
    for check in ("input_length: breach", "oov_rate: breach"):
        assert check in out, out
    assert re.search(r"input_length: breach \d\.\d{4} \(threshold 0\.5\)", out), out
    assert re.search(r"embedding: (breach|skip)", out), out
    [event_id] = re.findall(r"loraflow\.drift\.detected \(id ([0-9a-f-]{36})\)", events)

    def triggered():
        with prefect_client(stack.api) as client:
            runs = client.read_flow_runs(limit=50)
        return [r for r in runs if event_id in str(r.parameters.get("cause", ""))]

    [retrain] = wait_for(triggered, 90, "the drift trigger to create a retraining run")
    assert retrain.parameters["cause"] == f"loraflow.drift.detected {event_id} record={record}"
    assert retrain.parameters["force"] is True
    assert retrain.created_by and retrain.created_by.type == "AUTOMATION"
    from prefect.states import Cancelling

    with prefect_client(stack.api) as client:  # retraining itself is the stack test's subject
        client.set_flow_run_state(retrain.id, Cancelling(), force=True)

    wide = {**stack.env, "COLUMNS": "400"}  # whole record ids in the decisions table
    lineage = run([str(BIN / "loraflow"), "lineage", f"{MODEL}@{version}"], wide)
    assert "monitor" in lineage and "breach" in lineage and record[:12] in lineage, lineage
