"""The service's live window: features of served inputs per version, never raw text unless the
monitoring policy asks for a sample, and then only redacted."""

from __future__ import annotations

import httpx

from tasks.core.config.monitoring import LiveSpec
from tasks.core.monitoring.features import SKETCH_DIM
from tasks.core.serving.runner import BackgroundServer, build_service
from tests.serving.conftest import FAST, NAME
from tests.serving.test_service import total

SECRET = "jane.doe@example.com"
TEXTS = [f"a good film, write to {SECRET}", "the plot was awful and cold", "superb movie"]


def serve(home, live: LiveSpec | None = None) -> BackgroundServer:
    return BackgroundServer(build_service(NAME, FAST, home.tracking_uri, live=live))


def test_window_keeps_features_and_feedback_but_no_text(home, registry):
    _, (v1, _) = registry
    with serve(home) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        server.wait_ready(60)
        answer = http.post("/predict", json={"texts": TEXTS}).json()
        first = answer["predictions"][0]
        assert http.post("/feedback", json={"id": first["id"], "label": first["label"]}).is_success
        raw = http.get("/monitoring/window")
        assert total(server.url, "loraflow_input_tokens_count", version=v1) == 3
        assert total(server.url, "loraflow_prediction_confidence_count", version=v1) == 3
    for text in TEXTS:  # not a text, not a word of one that only the input held
        assert text not in raw.text
    assert SECRET not in raw.text and "awful" not in raw.text
    body = raw.json()
    assert (body["window"], body["sample_inputs"]) == (500, 0)
    window = body["versions"][v1]
    stats = window["stats"]
    assert window["served_total"] == stats["count"] == 3 and window["samples"] == []
    assert sum(stats["predictions"].values()) == 3
    assert all(t > 0 for t in stats["tokens"]) and stats["words"] == 17
    assert stats["oov"] == 0  # a version registered without a reference vocabulary
    assert [len(s) for s in stats["sketches"]] == [SKETCH_DIM] * 3
    assert window["feedback"] == {"count": 1, "correct": 1}


def test_sampling_keeps_only_redacted_texts(home, registry):
    live = LiveSpec(window=50, sample_inputs=2)
    with serve(home, live) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        v1 = server.wait_ready(60)["champion"]
        http.post("/predict", json={"texts": TEXTS[::-1]})
        raw = http.get("/monitoring/window")
    assert SECRET not in raw.text
    # The last two of the three, the address replaced by the project's PII placeholder.
    assert raw.json()["versions"][v1]["samples"] == [
        "the plot was awful and cold",
        "a good film, write to [EMAIL]",
    ]


def test_window_needs_the_feedback_token_and_the_monitor_sends_it(home, registry, monkeypatch):
    """An administrative endpoint: with a feedback token set, the window answers 401 without it;
    the monitor's reader sends it from the environment, as the canary's replay does."""
    from tasks.core.monitoring.sources import live_window
    from tasks.core.security.tokens import FEEDBACK_ENV
    from tests.serving.test_service_auth import FEEDBACK_TOKEN, ServiceTokens, serve

    with serve(home, ServiceTokens(feedback=FEEDBACK_TOKEN)) as server:
        v1 = server.wait_ready(60)["champion"]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.post("/predict", json={"texts": TEXTS}).is_success
            assert http.get("/monitoring/window").status_code == 401
        monkeypatch.setenv(FEEDBACK_ENV, FEEDBACK_TOKEN)
        stats, feedback = live_window(server.url, v1)
    assert stats.count == 3 and feedback.count == 0
