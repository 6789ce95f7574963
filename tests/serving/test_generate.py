"""POST /generate over real HTTP on loopback, with a real registered generator (tiny Llama)."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tasks.core.config.canary import ServingSpec
from tasks.core.errors import RequestRejected
from tasks.core.serving.generate import parse_generate
from tasks.core.serving.runner import scrape
from tasks.core.tracking import client
from tests.serving.conftest import FAST, start
from tests.tiny import build_tiny_llama

NAME = "tiny-generator"
TINY_LLAMA = "loraflow-test/tiny-llama"


@pytest.fixture
def generator(home, tmp_path):
    """A registered generator version (untrained LoRA on the mirrored tiny Llama), champion."""
    from tasks.core.catalog.mirror import import_folder
    from tasks.core.config.train import LoraSpec
    from tasks.core.registry.pyfunc import GENERATION_ARTIFACT
    from tasks.core.registry.versions import register
    from tasks.core.training.modeling import (
        CAUSAL_LM,
        ModelRef,
        add_lora,
        load_causal_lm,
        load_tokenizer,
        save_adapter,
    )  # fmt: skip

    revision = import_folder(build_tiny_llama(tmp_path / "llama"), TINY_LLAMA, home.hf_hub_cache)
    ref = ModelRef(TINY_LLAMA, revision.revision)
    model = add_lora(load_causal_lm(ref, home.hf_hub_cache), LoraSpec(r=4, alpha=8), CAUSAL_LM)
    adapter = save_adapter(model, load_tokenizer(ref, home.hf_hub_cache), ref, [],
                           tmp_path / "adapter", CAUSAL_LM)  # fmt: skip
    pinned = tmp_path / "generation.json"
    pinned.write_text(json.dumps({"generation": {"max_new_tokens": 4}, "system_prompt": None}))
    mlc = client(home.tracking_uri)
    experiment = mlc.create_experiment("gen")
    versions = []
    for _ in range(2):  # two runs of the same adapter: two versions that answer alike
        run_id = mlc.create_run(experiment).info.run_id
        versions.append(register(mlc, NAME, run_id, adapter, {}, "tiny generator", None,
                                 {GENERATION_ARTIFACT: pinned}).version)  # fmt: skip
    mlc.set_registered_model_alias(NAME, "champion", versions[0])
    return versions[0], versions[1]


def test_generate_batched_with_limits_and_metrics(home, generator):
    generator, _ = generator
    with start(home, FAST, name=NAME) as server:
        server.wait_ready(120)
        one = httpx.post(f"{server.url}/generate", json={"prompt": "review : good"}, timeout=60)
        assert one.status_code == 200, one.text
        (answer,) = one.json()["answers"]
        assert isinstance(answer["output"], str) and answer["output_tokens"] <= 4
        many = httpx.post(f"{server.url}/generate",
                          json={"prompts": ["review : bad", "review : the plot was dull"],
                                "max_new_tokens": 2}, timeout=60)  # fmt: skip
        assert [a["output_tokens"] <= 2 for a in many.json()["answers"]] == [True, True]

        def refused(body: dict | bytes) -> httpx.Response:
            if isinstance(body, bytes):
                return httpx.post(f"{server.url}/generate", content=body, timeout=60)
            return httpx.post(f"{server.url}/generate", json=body, timeout=60)

        huge = refused(json.dumps({"prompt": "x" * 1_000_000}).encode())
        assert huge.status_code == 413 and huge.json()["reason"] == "body_too_large"
        above = refused({"prompt": "review : good", "max_new_tokens": 100_000})
        assert above.status_code == 422 and "limit 256" in above.json()["error"]
        pinned = refused({"prompt": "review : good", "max_new_tokens": 5})
        assert pinned.status_code == 422 and "pinned 4" in pinned.json()["error"]
        predict = httpx.post(f"{server.url}/predict", json={"text": "good"}, timeout=60)
        assert predict.status_code == 422 and predict.json()["reason"] == "generator"
        assert f'loraflow_output_tokens_total{{version="{generator}"}}' in scrape(server.url)


def test_parse_generate_reasons():
    spec = ServingSpec(max_text_chars=10, max_new_tokens=8)
    assert parse_generate(b'{"prompt": "hi", "max_new_tokens": 8}', spec) == (["hi"], 8, None)
    for body, reason in (
        (b'{"prompt": "' + b"x" * 11 + b'"}', "prompt_too_long"),
        (b'{"prompt": "hi", "max_new_tokens": 9}', "max_new_tokens"),
        (b'{"prompt": ""}', "empty_prompt"),
        (b'{"text": "hi"}', "invalid_body"),
        (b"{", "invalid_json"),
    ):
        with pytest.raises(RequestRejected) as caught:
            parse_generate(body, spec)
        assert caught.value.reason == reason


def test_generate_needs_the_predict_token_once_one_is_set(home, generator):  # noqa: ARG001
    from tasks.core.security.tokens import ServiceTokens
    from tasks.core.serving.app import create_app
    from tasks.core.serving.models import ModelHolder, pyfunc_loader, read_registry
    from tasks.core.serving.runner import BackgroundServer
    from tasks.core.serving.telemetry import ServiceMetrics

    token = "predict-token-0123456789abcdef"
    tokens = ServiceTokens(feedback="feedback-token-0123456789abcdef", predict=token)
    mlc = client(home.tracking_uri)
    holder = ModelHolder(
        NAME, FAST, ServiceMetrics(), lambda: read_registry(mlc, NAME), pyfunc_loader
    )
    with BackgroundServer(create_app(holder, tokens)) as server:
        server.wait_ready(120)
        body = {"prompt": "review : good"}
        assert httpx.post(f"{server.url}/generate", json=body, timeout=60).status_code == 401
        ok = httpx.post(f"{server.url}/generate", json=body, timeout=60,
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        assert ok.status_code == 200, ok.text


def test_challenger_answers_are_shadowed_by_the_champion(home, generator):
    """Agreement (exact match of the two answers) lands in the canary's agreement series, and
    their ROUGE-L beside it (identical answers: 1.0 each); time to first token per version."""
    from tasks.core.promotion.canary_io import write_lease
    from tasks.core.promotion.lease import granted

    v1, v2 = generator
    mlc = client(home.tracking_uri)
    mlc.set_registered_model_alias(NAME, "challenger", v2)
    write_lease(mlc, NAME, granted(100, "test-canary", v2, 1, 600))
    with start(home, FAST, name=NAME) as server:
        server.wait_ready(120, until=lambda s: s["challenger_percent"] == 100)
        answered = httpx.post(
            f"{server.url}/generate",
            json={"prompts": ["review : good", "review : bad"]},
            timeout=60,
        )
        assert answered.json()["role"] == "challenger", answered.text
        series = (
            f'loraflow_shadow_agreement_total{{agree="true",champion="{v1}",version="{v2}"}} 2.0'
        )
        for _ in range(100):
            if series in scrape(server.url):
                break
            time.sleep(0.1)
        metrics = scrape(server.url)
        assert series in metrics
        words = sum(1.0 for a in answered.json()["answers"] if a["output"].split())
        rouge = f'loraflow_shadow_rouge_l_total{{champion="{v1}",version="{v2}"}} {words}'
        assert rouge in metrics
        ttft = f'loraflow_time_to_first_token_seconds_count{{version="{v2}"}} 1.0'
        assert ttft in metrics


def test_feedback_on_generated_answers_counts_online_quality(home, generator):
    """A rating (good/bad) or a reference answer (exact match + ROUGE-L, as evaluation
    scores) per generated answer, counted for the version that answered; a class label for a
    generation is refused and uses up nothing."""
    v1, _ = generator
    with start(home, FAST, name=NAME) as server, httpx.Client(base_url=server.url) as http:
        server.wait_ready(120)
        answers = http.post(
            "/generate", json={"prompts": ["review : good", "review : bad", "review : ok"]},
            timeout=60,
        ).json()["answers"]  # fmt: skip
        (a, b, c), said = [x["id"] for x in answers], answers[1]["output"]
        wrong_kind = http.post("/feedback", json={"id": a, "label": "positive"})
        assert wrong_kind.status_code == 422, wrong_kind.text
        assert "takes 'rating' or 'reference'" in wrong_kind.json()["error"]
        both = http.post("/feedback", json={"id": a, "rating": "good", "reference": "x"})
        assert both.status_code == 422 and both.json()["reason"] == "invalid_input"
        items = [
            {"id": a, "rating": "good"},
            {"id": b, "reference": said},  # the answer itself: exact match, ROUGE-L 1 (or 0
            {"id": c, "reference": "zzz qqq"},  # when it has no words); no overlap: 0
        ]
        assert http.post("/feedback", json={"items": items}).json()["accepted"] == 3
        metrics = scrape(server.url)
    rouge = 1.0 if said.split() else 0.0
    assert f'loraflow_feedback_total{{correct="true",version="{v1}"}} 2.0' in metrics
    assert f'loraflow_feedback_total{{correct="false",version="{v1}"}} 1.0' in metrics
    assert f'loraflow_feedback_rouge_l_count{{version="{v1}"}} 2.0' in metrics
    assert f'loraflow_feedback_rouge_l_sum{{version="{v1}"}} {rouge}' in metrics
