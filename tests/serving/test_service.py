"""The inference service over real HTTP on loopback, with real registered pyfunc models."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

from tasks.core.promotion.canary_io import write_lease
from tasks.core.promotion.lease import granted
from tasks.core.serving.runner import scrape
from tasks.core.serving.telemetry import parse_snapshot
from tests.serving.conftest import NAME, start
from tests.serving.models import LABELS, FailingModel, register_version, untrained_adapter


def total(url: str, name: str, **labels: str) -> float:
    """Sum of a series' samples whose labels include ``labels``."""
    return sum(
        value
        for (sample, pairs), value in parse_snapshot(scrape(url)).items()
        if sample == name and all(dict(pairs).get(k) == v for k, v in labels.items())
    )


def test_predicts_single_and_batched_with_health_and_metrics(home, registry):
    _, (v1, _) = registry
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        state = server.wait_ready(60)
        assert (state["champion"], state["challenger"]) == (v1, None)

        single = http.post("/predict", json={"text": "a good film"})
        assert single.status_code == 200, single.text
        body = single.json()
        assert (body["model"], body["version"], body["role"]) == (NAME, v1, "champion")
        [prediction] = body["predictions"]
        assert prediction["label"] in LABELS and 0.5 <= prediction["score"] <= 1

        texts = ["the plot was awful", "a superb movie", "cold and dull"]
        batched = http.post("/predict", json={"texts": texts}).json()
        assert [p["id"][-2:] for p in batched["predictions"]] == ["-0", "-1", "-2"]
        # Each text is scored alone by the model too: batching does not change answers.
        alone = [http.post("/predict", json={"text": t}).json()["predictions"][0] for t in texts]
        assert [p["label"] for p in batched["predictions"]] == [p["label"] for p in alone]

        url = server.url
        assert total(url, "loraflow_requests_total", version=v1) == 5
        assert total(url, "loraflow_predictions_total", version=v1) == 7  # texts, by class
        assert total(url, "loraflow_request_latency_seconds_count", version=v1) == 5
        assert total(url, "loraflow_errors_total") == 0
        assert total(url, "loraflow_model_loaded", version=v1, role="champion") == 1


def test_not_ready_without_a_champion(home):
    with start(home, name="never-registered") as server:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 503
            refused = http.post("/predict", json={"text": "good"})
        assert refused.status_code == 503 and refused.json()["reason"] == "not_ready"
        assert total(server.url, "loraflow_errors_total") == 0


BAD_REQUESTS = [
    ("empty text", {"json": {"text": ""}}, 422, "empty"),
    ("whitespace text", {"json": {"text": "  \n "}}, 422, "empty"),
    ("empty list", {"json": {"texts": []}}, 422, "empty"),
    ("empty text in a list", {"json": {"texts": ["good", ""]}}, 422, "texts[1] is empty"),
    ("number for text", {"json": {"text": 5}}, 422, "valid string"),
    ("numbers in texts", {"json": {"texts": [1, 2]}}, 422, "valid string"),
    ("string for texts", {"json": {"texts": "good"}}, 422, "valid list"),
    ("not JSON", {"content": b"{text: good}"}, 400, "not valid JSON"),
    ("JSON array", {"json": ["good"]}, 422, "JSON object"),
    ("unknown key", {"json": {"text": "good", "prompt": "x"}}, 422, "prompt"),
    ("text and texts", {"json": {"text": "a", "texts": ["b"]}}, 422, "exactly one"),
    ("no text", {"json": {"key": "user-1"}}, 422, "exactly one"),
    ("1 MB body", {"content": json.dumps({"text": "good " * 200_000})}, 413, "exceeds"),
    ("text too long", {"json": {"text": "good " * 500}}, 422, "at most 2000"),
    ("too many texts", {"json": {"texts": ["good"] * 65}}, 422, "at most 64"),
]


def test_bad_requests_get_4xx_with_a_reason_and_are_not_model_errors(home, registry):
    _, (v1, _) = registry
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready(60)
        for case, request, status, fragment in BAD_REQUESTS:
            response = http.post("/predict", **request)
            assert response.status_code == status, (case, response.text)
            body = response.json()
            assert fragment in body["error"], (case, body)
            assert body["reason"], case
        bad_feedback = http.post("/feedback", json={"id": "nope", "label": "positive"})
        assert bad_feedback.status_code == 404 and "nope" in bad_feedback.json()["error"]
        assert http.post("/feedback", json={"id": "x"}).status_code == 422

        url = server.url
        assert total(url, "loraflow_requests_total") == 0
        assert total(url, "loraflow_errors_total") == 0
        assert total(url, "loraflow_rejected_requests_total") == len(BAD_REQUESTS) + 2
        assert total(url, "loraflow_rejected_requests_total", reason="body_too_large") == 1
        # The service is unharmed.
        assert http.post("/predict", json={"text": "good"}).json()["version"] == v1


def test_a_failing_model_answers_500_counted_against_its_version(
    home, registry, mirrored, tmp_path
):
    mlc, _ = registry
    adapter = untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / "failing", 3)
    failing = register_version(mlc, NAME, adapter, python_model=FailingModel())
    mlc.set_registered_model_alias(NAME, "champion", failing)
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready(60)
        broken = http.post("/predict", json={"text": "boom goes the film"})
        assert broken.status_code == 500 and "cannot score 'boom'" in broken.json()["error"]
        assert http.post("/predict", json={"text": "a good film"}).status_code == 200
        assert total(server.url, "loraflow_errors_total", version=failing) == 1
        assert total(server.url, "loraflow_requests_total", version=failing) == 2


def test_sticky_routing_shadow_agreement_and_feedback(home, registry):
    mlc, (v1, v2) = registry
    mlc.set_registered_model_alias(NAME, "challenger", v2)
    write_lease(mlc, NAME, granted(50, "test-canary", v2, 1, 600))
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        state = server.wait_ready(60)
        assert (state["champion"], state["challenger"], state["challenger_percent"]) == (
            v1,
            v2,
            50,
        )
        served, ids = {}, []
        for i in range(40):
            first = http.post("/predict", json={"text": "a warm story", "key": f"user-{i}"}).json()
            again = http.post(
                "/predict", json={"text": "a cold story"}, headers={"X-Request-Key": f"user-{i}"}
            ).json()
            assert first["version"] == again["version"], f"user-{i} switched models"
            served[f"user-{i}"] = first["version"]
            ids += [first["predictions"][0]["id"], again["predictions"][0]["id"]]
        routed = sum(v == v2 for v in served.values())
        assert 8 <= routed <= 32, routed  # about half of 40 keys

        deadline = time.monotonic() + 10  # shadow scoring finishes after the answer
        while total(server.url, "loraflow_shadow_agreement_total") < 2 * routed:
            assert time.monotonic() < deadline, "shadow scores missing"
            time.sleep(0.05)
        assert total(server.url, "loraflow_shadow_agreement_total", version=v2, champion=v1) == (
            2 * routed
        )

        accepted = http.post(
            "/feedback", json={"items": [{"id": i, "label": "positive"} for i in ids]}
        )
        assert accepted.json() == {"accepted": len(ids), "unknown": []}
        # Challenger-routed texts count for the champion too (its shadow answer).
        assert total(server.url, "loraflow_feedback_total", version=v2) == 2 * routed
        assert total(server.url, "loraflow_feedback_total", version=v1) == len(ids)
        again = http.post("/feedback", json={"id": ids[0], "label": "positive"})
        assert again.status_code == 404  # one outcome per prediction


def test_alias_flip_under_load_fails_no_request(home, registry):
    mlc, (v1, v2) = registry
    failures, seen, stop = [], [], threading.Event()

    def load(url: str, worker: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            i = 0
            while not stop.is_set():
                try:
                    r = http.post("/predict", json={"text": "good film", "key": f"{worker}-{i}"})
                    if r.status_code != 200:
                        failures.append(f"{r.status_code}: {r.text}")
                    else:
                        seen.append(r.json()["version"])
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                i += 1

    def served_now(version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        mark = len(seen)
        while not seen[mark:].count(version) >= 20:
            assert time.monotonic() < deadline, f"v{version} never served"
            time.sleep(0.05)

    with start(home) as server:
        server.wait_ready(60)
        threads = [threading.Thread(target=load, args=(server.url, w)) for w in range(4)]
        for t in threads:
            t.start()
        try:
            served_now(v1)
            mlc.set_registered_model_alias(NAME, "champion", v2)  # not loaded yet: load beside
            served_now(v2)
            mlc.set_registered_model_alias(NAME, "champion", v1)  # retired earlier: load again
            served_now(v1)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert failures == []
        assert len(seen) > 60
        assert total(server.url, "loraflow_model_swaps_total", role="champion") == 3
        assert total(server.url, "loraflow_errors_total") == 0


@pytest.mark.parametrize("percent", [0, 100])
def test_weight_bounds_route_everything_one_way(home, registry, percent):
    mlc, (v1, v2) = registry
    mlc.set_registered_model_alias(NAME, "challenger", v2)
    write_lease(mlc, NAME, granted(percent, "test-canary", v2, 1, 600))
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready(60)
        versions = {
            http.post("/predict", json={"text": "good", "key": f"k{i}"}).json()["version"]
            for i in range(30)
        }
    assert versions == ({v2} if percent == 100 else {v1})


def test_an_expired_lease_sends_everything_to_the_champion_and_is_recorded_once(home, registry):
    """The promotion flow died mid-step: nobody renews the lease; once it expires every
    request goes to the champion, and the replica records why (one abort record)."""
    from tasks.core.promotion.canary_io import read_lease
    from tasks.core.registry.history import history

    mlc, (v1, v2) = registry
    mlc.set_registered_model_alias(NAME, "challenger", v2)
    canary_run = mlc.create_run(mlc.get_experiment_by_name("tests").experiment_id).info.run_id
    write_lease(mlc, NAME, granted(100, canary_run, v2, 2, seconds=2))
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        state = server.wait_ready(60, until=lambda s: s["challenger_percent"] == 100)
        assert state["canary"]["state"] == "active"
        assert http.post("/predict", json={"text": "a film", "key": "k"}).json()["version"] == v2
        state = server.wait_ready(30, until=lambda s: s["canary"]["state"] != "active")
        assert state["challenger_percent"] == 0
        versions = {
            http.post("/predict", json={"text": "a film", "key": f"k{i}"}).json()["version"]
            for i in range(30)
        }
        assert versions == {v1}
        deadline = time.monotonic() + 10
        while not history(mlc, NAME, v2, kind="canary-abort"):
            assert time.monotonic() < deadline, "no abort record"
            time.sleep(0.1)
        assert total(server.url, "loraflow_canary_lease_expired_total") == 1
    (abort,) = history(mlc, NAME, v2, kind="canary-abort")
    assert abort.actor.startswith("service:") and "expired" in abort.reason
    assert read_lease(mlc, NAME).ended.startswith("expired")  # every replica now sees it ended
    assert mlc.get_model_version(NAME, v2).tags["canary.outcome"] == "aborted"


def test_rollback_ends_a_live_canary_by_hand(home, registry):
    from tasks.core.promotion.canary_io import read_lease
    from tasks.core.promotion.rollback import abort_live_canary
    from tasks.core.registry.history import history

    mlc, (v1, v2) = registry
    mlc.set_registered_model_alias(NAME, "challenger", v2)
    canary_run = mlc.create_run(mlc.get_experiment_by_name("tests").experiment_id).info.run_id
    write_lease(mlc, NAME, granted(50, canary_run, v2, 1, seconds=600))
    with start(home) as server:
        server.wait_ready(60, until=lambda s: s["challenger_percent"] == 50)
        assert abort_live_canary(mlc, NAME, "latency alarm", "cli:carol") == v2
        state = server.wait_ready(30, until=lambda s: s["challenger_percent"] == 0)
        assert state["canary"]["state"] == "ended" and state["challenger"] == v2
    (abort,) = history(mlc, NAME, v2, kind="canary-abort")
    assert (abort.actor, abort.reason) == ("cli:carol", "ended by hand: latency alarm")
    assert read_lease(mlc, NAME).ended == "aborted: ended by hand: latency alarm"
    assert abort_live_canary(mlc, NAME, "again", "cli:carol") is None  # nothing live any more


def test_feedback_outside_the_version_labels_is_refused_and_uses_up_nothing(home, registry):
    with start(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready(60)
        pid = http.post("/predict", json={"text": "a good film"}).json()["predictions"][0]["id"]
        typo = http.post("/feedback", json={"id": pid, "label": "postive"})
        assert typo.status_code == 422 and typo.json()["reason"] == "unknown_label"
        assert "allowed labels: negative, positive" in typo.json()["error"]
        mixed = http.post(
            "/feedback",
            json={"items": [{"id": pid, "label": "positive"}, {"id": pid, "label": "spam"}]},
        )
        assert mixed.status_code == 422  # the whole batch, nothing counted
        empty = http.post("/feedback", json={"items": []})
        assert empty.status_code == 422 and empty.json()["reason"] == "empty_batch"
        assert total(server.url, "loraflow_feedback_total") == 0
        assert http.post("/feedback", json={"id": pid, "label": "positive"}).json() == {
            "accepted": 1,
            "unknown": [],
        }
        assert total(server.url, "loraflow_rejected_requests_total", reason="unknown_label") == 2
