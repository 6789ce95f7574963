"""The monitor flow under a real Prefect engine: a served version with its reference profile,
in-distribution traffic (ok, nothing emitted), then shifted traffic with flipped feedback
(breach: drift and accuracy decay found, recorded on the version, the event emitted with the
evidence and reaching the Prefect API)."""

from __future__ import annotations

import time

import httpx
import pytest

from flows.monitor import monitor_flow
from tasks.core.config.canary import ServingSpec
from tasks.core.config.monitoring import LiveSpec
from tasks.core.monitoring.profile import ARTIFACT, MODEL_ARTIFACT, profile_split
from tasks.core.registry.history import Decision, append, history, read_record
from tasks.core.registry.lineage import EVALUATION_TAG
from tasks.core.registry.versions import register
from tasks.core.serving.runner import BackgroundServer, build_service
from tasks.core.tracking import client
from tests.serving.models import LABELS, train_adapter
from tests.tiny import sentiment_rows

pytestmark = pytest.mark.usefixtures("prefect_harness")
NAME = "tiny-monitor"
WINDOW = 120
SHIFTED = [
    "revenue",
    "grew",
    "while",
    "margins",
    "fell",
    "after",
    "supply",
    "constraints",
    "delayed",
    "shipments",
]


def registered_with_profile(home, mirrored, tmp_path) -> str:
    """Version 1, champion, with a reference profile in an evaluation record (as the pipeline
    leaves it): profiled on held-out rows, vocabulary of its training rows."""
    from tasks.core.training.modeling import load_classifier, predict_proba

    train = sentiment_rows(192, seed=1)
    adapter = train_adapter(home.hf_hub_cache, mirrored, train, tmp_path / "adapter", 1)
    model, tokenizer, labels = load_classifier(adapter, home.hf_hub_cache)
    held_out = sentiment_rows(200, seed=2)
    texts = [t for _, t in held_out]
    accuracy = float(
        (predict_proba(model, tokenizer, texts).argmax(1) == [y for y, _ in held_out]).mean()
    )
    profile = profile_split(
        model, tokenizer, labels, texts, [t for _, t in train], 16, 64, accuracy
    )
    path = profile.write(tmp_path / "profile" / "reference_profile.json")
    mlc = client(home.tracking_uri)
    import mlflow

    run_id = mlc.create_run(mlflow.set_experiment("tests").experiment_id).info.run_id
    version = register(
        mlc, NAME, run_id, adapter, {}, "tiny", extra_artifacts={MODEL_ARTIFACT: path}
    ).version
    record = append(
        mlc,
        mlc.get_run(run_id).info.experiment_id,
        Decision("evaluation", NAME, "pass", "test", "tests", train_run_id=run_id),
        artifacts={ARTIFACT: profile.to_dict()},
    )
    mlc.set_model_version_tag(NAME, version, EVALUATION_TAG, record)
    mlc.set_registered_model_alias(NAME, "champion", version)
    return version


def replay(http: httpx.Client, texts: list[str], label_for) -> None:
    for start in range(0, len(texts), 32):
        answer = http.post("/predict", json={"texts": texts[start : start + 32]}).json()
        items = [{"id": p["id"], "label": label_for(start + i, p["label"])}
                 for i, p in enumerate(answer["predictions"])]  # fmt: skip
        assert http.post("/feedback", json={"items": items}).is_success


def drift_events() -> list[dict]:
    from prefect.settings import PREFECT_API_URL

    query = {"filter": {"event": {"name": ["loraflow.drift.detected"]}}, "limit": 50}
    answer = httpx.post(f"{PREFECT_API_URL.value()}/events/filter", json=query, timeout=30)
    answer.raise_for_status()
    return answer.json()["events"]


def test_monitor_finds_shift_records_it_and_emits_the_event(home, mirrored, tmp_path):
    version = registered_with_profile(home, mirrored, tmp_path)
    spec = ServingSpec(poll_seconds=0.1, max_wait_ms=2)
    app = build_service(NAME, spec, home.tracking_uri, live=LiveSpec(window=WINDOW))
    rows = sentiment_rows(WINDOW, seed=7)
    flip = {"negative": "positive", "positive": "negative"}
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        server.wait_ready(60)
        replay(http, [t for _, t in rows], lambda i, _: LABELS[rows[i][0]])
        calm = monitor_flow(model_name=NAME, service_url=server.url)
        assert (calm["version"], calm["outcome"], calm["events"]) == (version, "ok", []), calm
        shifted = [" ".join(SHIFTED[i % 5 :] + SHIFTED) for i in range(WINDOW)]
        replay(http, shifted, lambda _i, label: flip[label])
        alarm = monitor_flow(model_name=NAME, service_url=server.url)
    assert alarm["outcome"] == "breach" and alarm["events"] == ["drift.detected"], alarm
    lines = "\n".join(alarm["findings"])
    print(f"calm:\n{chr(10).join(calm['findings'])}\nshifted:\n{lines}")  # shown with -s
    for check in ("input_length", "oov_rate", "online_accuracy", "embedding"):
        assert f"{check}: breach" in lines, lines
    [calm_record, alarm_record] = history(client(home.tracking_uri), NAME, version, "monitor")
    assert (calm_record.outcome, alarm_record.outcome) == ("ok", "breach")
    assert alarm_record.run_id == alarm["record"] and "oov_rate: breach" in alarm_record.reason
    details = read_record(client(home.tracking_uri), alarm_record.run_id)["details"]
    assert {f["check"] for f in details["findings"] if f["verdict"] == "breach"} >= {"oov_rate"}

    [event_id] = alarm["event_ids"]
    deadline = time.monotonic() + 30
    while not (found := [e for e in drift_events() if e["id"] == event_id]):
        assert time.monotonic() < deadline, "the event never reached the Prefect API"
        time.sleep(0.5)
    [event] = found
    assert event["resource"]["prefect.resource.id"] == f"loraflow.model.{NAME}"
    payload = event["payload"]
    assert payload["record"] == alarm["record"] and payload["version"] == version
    assert {f["check"] for f in payload["findings"]} >= {"input_length", "oov_rate"}


def test_a_model_without_champion_is_bad_input(home):
    from tasks.core.errors import BadInput

    with pytest.raises(BadInput, match="registered model 'nothing-here': no champion alias"):
        monitor_flow(model_name="nothing-here", service_url="http://127.0.0.1:9")
