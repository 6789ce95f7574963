"""Bearer tokens of the service over real HTTP: /feedback needs one, a refused call counts for
nothing; /predict needs one only when a predict token is set; probes and /metrics stay open."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tasks.core.security.tokens import ServiceTokens, allowed, bearer
from tests.conftest import REPO
from tests.serving.conftest import FAST, NAME
from tests.serving.test_service import total

FEEDBACK_TOKEN = "feedback-token-0123456789abcdef"
PREDICT_TOKEN = "predict-token-0123456789abcdef"


def serve(home, tokens: ServiceTokens):
    from tasks.core.serving.app import create_app
    from tasks.core.serving.models import ModelHolder, pyfunc_loader, read_registry
    from tasks.core.serving.runner import BackgroundServer
    from tasks.core.serving.telemetry import ServiceMetrics
    from tasks.core.tracking import client

    mlc = client(home.tracking_uri)
    holder = ModelHolder(
        NAME, FAST, ServiceMetrics(), lambda: read_registry(mlc, NAME), pyfunc_loader
    )
    return BackgroundServer(create_app(holder, tokens))


def test_feedback_without_the_token_is_401_and_counts_nothing(home, registry):
    _, (v1, _) = registry
    with serve(home, ServiceTokens(feedback=FEEDBACK_TOKEN)) as server:
        server.wait_ready(60)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200  # probes and metrics stay open
            assert http.get("/readyz").status_code == 200
            assert http.get("/metrics").status_code == 200
            predicted = http.post(
                "/predict", json={"text": "a good film"}
            )  # open: no predict token
            assert predicted.status_code == 200, predicted.text
            pid = predicted.json()["predictions"][0]["id"]
            item = {"id": pid, "label": "positive"}

            anonymous = http.post("/feedback", json=item)
            wrong = http.post("/feedback", json=item, headers={"Authorization": "Bearer nope"})
            basic = http.post("/feedback", json=item, auth=("user", FEEDBACK_TOKEN))
            for refused in (anonymous, wrong, basic):
                assert refused.status_code == 401, refused.text
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.json()["reason"] == "unauthorized"
            assert total(server.url, "loraflow_feedback_total") == 0
            assert total(server.url, "loraflow_rejected_requests_total", reason="unauthorized") == 3

            # The refused calls did not consume the prediction: the authorised one counts it.
            good = http.post(
                "/feedback", json=item, headers={"Authorization": f"Bearer {FEEDBACK_TOKEN}"}
            )
            assert good.status_code == 200 and good.json()["accepted"] == 1
            assert total(server.url, "loraflow_feedback_total", version=v1) == 1


def test_predict_needs_its_token_once_one_is_set(home, registry):
    tokens = ServiceTokens(feedback=FEEDBACK_TOKEN, predict=PREDICT_TOKEN)
    with serve(home, tokens) as server:
        server.wait_ready(60)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            body = {"text": "a good film"}
            assert http.post("/predict", json=body).status_code == 401
            assert (
                http.post("/predict", json=body, headers={"Authorization": "Bearer x"}).status_code
                == 401
            )
            for token in (PREDICT_TOKEN, FEEDBACK_TOKEN):
                ok = http.post("/predict", json=body, headers={"Authorization": f"Bearer {token}"})
                assert ok.status_code == 200, ok.text
            assert total(server.url, "loraflow_requests_total") == 2  # refused calls: no request


def test_embedded_mode_without_tokens_stays_open(home, registry):
    with serve(home, ServiceTokens()) as server:
        server.wait_ready(60)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            pid = http.post("/predict", json={"text": "good"}).json()["predictions"][0]["id"]
            assert http.post("/feedback", json={"id": pid, "label": "positive"}).status_code == 200


def test_token_parsing_and_comparison():
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") == "" and bearer(None) == ""
    assert allowed("anything", ()) and not allowed("", ("t",)) and not allowed("x", ("t",))
    assert allowed("t", ("s", "t"))
    tokens = ServiceTokens.from_env(
        {"LORAFLOW_FEEDBACK_TOKEN": " f ", "LORAFLOW_PREDICT_TOKEN": ""}
    )
    assert tokens.required("feedback") == ("f",) and tokens.required("predict") == ()
    assert "/predict open" in tokens.describe()


def test_token_from_a_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    tokens = ServiceTokens.from_env({"LORAFLOW_FEEDBACK_TOKEN_FILE": str(path)})
    assert tokens.feedback == "from-a-file"


def test_serve_refuses_a_public_address_without_a_feedback_token(home):
    env = {
        k: v for k, v in __import__("os").environ.items() if not k.startswith("LORAFLOW_FEEDBACK")
    }
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli.app", "serve", NAME, "--host", "0.0.0.0", "--port", "0"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "LORAFLOW_FEEDBACK_TOKEN" in done.stderr
