"""Models registered before the regroup (class pickled as ``tasks.core.registry.X``) still load."""

from __future__ import annotations

import mlflow
import pandas as pd

from tasks.core.registry.pyfunc import PIP_REQUIREMENTS, SIGNATURE, LoraClassifierModel
from tests.conftest import REPO
from tests.serving.models import LABELS, untrained_adapter

OLD_PICKLE = REPO / "tests/fixtures/pre_regroup/python_model.pkl"


def test_a_version_logged_by_the_previous_layout_loads_and_predicts(home, mirrored, tmp_path):
    old = OLD_PICKLE.read_bytes()
    assert b"\x8c\x13tasks.core.registry\x94\x8c\x13LoraClassifierModel" in old  # the old path
    adapter = untrained_adapter(home.hf_hub_cache, mirrored, tmp_path / "adapter", seed=1)
    folder = tmp_path / "model"
    mlflow.pyfunc.save_model(
        str(folder),
        python_model=LoraClassifierModel(),
        artifacts={"adapter": str(adapter)},
        signature=SIGNATURE,
        pip_requirements=PIP_REQUIREMENTS,
    )
    (folder / "python_model.pkl").write_bytes(old)  # what the old layout wrote

    model = mlflow.pyfunc.load_model(str(folder))
    assert type(model.unwrap_python_model()) is LoraClassifierModel
    out = model.predict(pd.DataFrame({"text": ["a fine film", "a dull film"]}))
    assert list(out.columns) == ["label", "score"]
    assert set(out["label"]) <= set(LABELS) and out["score"].between(0, 1).all()
