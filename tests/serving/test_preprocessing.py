"""What was evaluated is what is served: a version registered with its preprocessing applies
it to every request, through the pyfunc and through the HTTP service alike (issue 14)."""

from __future__ import annotations

import httpx
import mlflow
import pandas as pd

from tasks.core.data.preprocess import Preprocessing
from tasks.core.registry.pyfunc import PREPROCESSING_ARTIFACT
from tasks.core.registry.versions import register
from tests.serving.conftest import start
from tests.serving.models import untrained_adapter

REDACTED = Preprocessing(lowercase=True, redact=("email", "phone"))
SAME = ["call [PHONE]", "call 07712345678", "CALL  07712 345678 ", "Call +44 7700 900123"]


def _register(mlc, name: str, adapter, preprocessing: Preprocessing | None, tmp_path) -> str:
    experiment_id = mlflow.set_experiment("tests").experiment_id
    run_id = mlc.create_run(experiment_id).info.run_id
    extra = {}
    if preprocessing is not None:
        path = preprocessing.write(tmp_path / f"{PREPROCESSING_ARTIFACT}.json")
        extra = {PREPROCESSING_ARTIFACT: path}
    version = register(mlc, name, run_id, adapter, {}, "card", None, extra).version
    mlc.set_registered_model_alias(name, "champion", version)
    return version


def test_a_redacting_model_serves_a_raw_number_as_the_placeholder(home, mirrored, tmp_path):
    from tasks.core.tracking import client

    mlc = client(home.tracking_uri)
    adapter = untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / "adapter", seed=1)
    _register(mlc, "redacting", adapter, REDACTED, tmp_path)
    model = mlflow.pyfunc.load_model("models:/redacting@champion")
    out = model.predict(pd.DataFrame({"text": SAME}))
    assert out["label"].nunique() == 1 and out["score"].nunique() == 1, out  # bit for bit
    with start(home, name="redacting") as server, httpx.Client(base_url=server.url) as http:
        server.wait_ready(60)
        answers = [http.post("/predict", json={"text": t}).json()["predictions"][0] for t in SAME]
    assert {(a["label"], a["score"]) for a in answers} == {
        (out["label"][0], round(float(out["score"][0]), 6))
    }


def test_a_version_without_recorded_preprocessing_scores_texts_as_sent(home, mirrored, tmp_path):
    from tasks.core.tracking import client

    mlc = client(home.tracking_uri)
    adapter = untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / "adapter", seed=1)
    _register(mlc, "older", adapter, None, tmp_path)
    loaded = mlflow.pyfunc.load_model("models:/older@champion")
    assert loaded.unwrap_python_model().preprocess is None
    python_model = loaded.unwrap_python_model()
    seen = []
    python_model.tokenizer = _Recording(python_model.tokenizer, seen)
    out = loaded.predict(pd.DataFrame({"text": SAME[:2]}))
    assert len(out) == 2
    # The raw number reaches the model as written. (Compared as texts, not scores: an
    # untrained head scores ~0.5, and under bf16 autocast two texts can round to one score.)
    assert seen == SAME[:2]


class _Recording:
    """The model's tokenizer, noting every list of texts it is asked to encode."""

    def __init__(self, inner, seen: list):
        self.inner, self.seen = inner, seen

    def __call__(self, texts, *args, **kwargs):
        self.seen.extend(texts)
        return self.inner(texts, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)
