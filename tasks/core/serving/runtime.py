"""How a registered version is served: its optimised form when that passed its gate, else exact.

A version registered with an optimised serving form (``tasks/core/registry/serving_form.py``)
carries the tags ``serving_form`` (the chosen form), ``serving_form.passed`` and
``serving_form.record`` (the run of its ``serving-form`` decision record); the form's files
(``model.onnx``, tokenizer, ``labels.json``, ``preprocessing.json``: the version's
preprocessing, applied to every text first as the exact model does) lie in that run's
artifacts under ``serving_form/<form>/``. ``served_form`` decides from the tags alone;
``load_version`` loads that form: an ONNX Runtime session (``OnnxClassifier``), or the exact
registered pyfunc, called directly on lists of texts (no DataFrame, no schema check per
request). Versions registered before optimised forms existed have no such tags and are
served exactly. Both forms give the live window the same per-text ``Features`` (token count,
OOV words against the version's registered vocabulary); the ONNX graph outputs logits only,
so its features carry no embedding sketch.
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from tasks.core.serving.batcher import Prediction
from tasks.core.training.passes import length_passes

EXACT = "exact"
FORM_TAG = "serving_form"
PASSED_TAG = "serving_form.passed"
ARTIFACT_ROOT = "serving_form"  # in the training run: serving_form/<form>/model.onnx, ...
LABELS_FILE = "labels.json"
MODEL_FILE = "model.onnx"
RECORD_TAG = "serving_form.record"  # the serving-form record's run, which holds the files
PREPROCESSING_FILE = "preprocessing.json"  # the version's preprocessing, in the form's folder
# Most texts per forward pass of a served batch. The batch is sorted by token length and cut
# where padding costs more than another pass (``passes.cheapest_passes``): one batch of 32 SST-2
# sentences padded to its longest holds 1.9x their tokens, so it is cut; ten similar ones are not.
SERVE_PASS = 32


def served_form(tags: dict[str, str]) -> str:
    """The form a version is served in: its optimised form if that passed, else the exact one."""
    form = tags.get(FORM_TAG, EXACT)
    return form if form != EXACT and tags.get(PASSED_TAG) == "true" else EXACT


class OnnxClassifier:
    """A sequence classifier exported to ONNX, run by ONNX Runtime on the CPU.

    ``threads`` is ONNX Runtime's intra-op thread count (1: the calling thread computes, so
    several predict threads share the cores without oversubscribing them). A folder with
    ``preprocessing.json`` applies that preprocessing to every text first. ``vocabulary``: the
    version's training vocabulary (word hashes), which ``predict_texts`` counts OOV words
    against, as the exact pyfunc does (empty: nothing counted as OOV).
    """

    def __init__(self, folder: Path, threads: int = 1, vocabulary: frozenset[str] = frozenset()):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        folder = Path(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(threads, 0)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.labels = list(json.loads((folder / LABELS_FILE).read_text())["labels"])
        self.max_length = int(json.loads((folder / LABELS_FILE).read_text())["max_length"])
        self.vocabulary = frozenset(vocabulary)
        self.preprocess = None
        if (folder / PREPROCESSING_FILE).is_file():
            from tasks.core.data.preprocess import Preprocessing

            self.preprocess = Preprocessing.read(folder / PREPROCESSING_FILE).apply

    def logits(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            padding=True,
            return_tensors="np",
        )
        feed = {name: encoded[name].astype(np.int64) for name in self.inputs}
        return self.session.run(None, feed)[0]

    def _probs(self, texts: list[str], tokens: list[int], batch_size: int) -> np.ndarray:
        """Probabilities of preprocessed ``texts`` (``tokens``: their token counts), in passes
        of at most ``batch_size`` texts sorted by length, cut where padding costs more than a
        pass (as the exact model's scoring cuts them)."""
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        sizes = [min(count, self.max_length) for count in tokens]
        for idx in length_passes(sizes, batch_size):
            probs[idx] = softmax(self.logits([texts[i] for i in idx]))
        return probs

    def _tokens(self, texts: list[str]) -> list[int]:
        """Full token counts (special tokens included, truncated or not)."""
        return [len(ids) for ids in self.tokenizer(list(texts), verbose=False)["input_ids"]]

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        """Class probabilities, in batches of similar token length (padding stays small)."""
        if not len(texts):
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        if self.preprocess is not None:
            texts = self.preprocess(list(texts))
        return self._probs(list(texts), self._tokens(texts), batch_size)

    def predict(self, texts: list[str], batch_size: int = SERVE_PASS) -> list[Prediction]:
        """(label, score) per text of the batch the service gathered."""
        return to_predictions(self.predict_proba(texts, batch_size), self.labels)

    def predict_texts(self, texts: list[str], batch_size: int = SERVE_PASS) -> list[tuple]:
        """(label, score, monitoring ``Features``) per text, as the exact pyfunc's
        ``predict_texts``: token counts (full length with special tokens, truncated or not,
        as the reference profile counts them) and OOV words of the preprocessed text; no
        embedding sketch (the graph outputs logits only, so the embedding check skips)."""
        from tasks.core.monitoring.features import features

        if not len(texts):
            return []
        if self.preprocess is not None:
            texts = self.preprocess(list(texts))
        texts = list(texts)
        tokens = self._tokens(texts)
        predictions = to_predictions(self._probs(texts, tokens, batch_size), self.labels)
        feats = features(texts, tokens, np.zeros((0, 0), np.float32), self.vocabulary)
        return [(label, score, f) for (label, score), f in zip(predictions, feats, strict=True)]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def to_predictions(probs: np.ndarray, labels: list[str]) -> list[Prediction]:
    best = probs.argmax(axis=1)
    return [(labels[i], float(probs[row, i])) for row, i in enumerate(best)]


def _exact_predict(loaded):
    """The registered classifier called on a list of texts directly (no DataFrame, no schema
    check per batch); any other pyfunc, or a subclass with its own ``predict``, through its
    DataFrame interface."""
    from tasks.core.registry.pyfunc import LoraClassifierModel

    model = loaded.unwrap_python_model()
    if type(model).predict is LoraClassifierModel.predict:
        from tasks.core.training.precision import resolve

        cast_linears(model.model, resolve("auto").dtype)  # the precision predict_texts uses
        return partial(model.predict_texts, batch_size=SERVE_PASS), tuple(model.labels)
    return partial(_pyfunc_predict, loaded), tuple(getattr(model, "labels", ()) or ())


def cast_linears(model, dtype) -> None:
    """Store the weights and biases of ``model``'s linear layers in the autocast ``dtype``
    (bf16), once: autocast casts them to it anyway, on every forward pass, which at one text
    per pass was most of the cost (exact form, 1 thread: 15.1 -> 9.3 ms per lone text). The
    outputs are bit-identical under autocast (the same rounding, done once): on the SST-2 dev
    split every score, label and monitoring feature matched. Norms and embeddings, which
    autocast keeps in fp32, stay fp32. ``dtype`` None (fp32 precision): nothing changes."""
    import torch

    if dtype is None:
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.data = module.weight.data.to(dtype)
                if module.bias is not None:
                    module.bias.data = module.bias.data.to(dtype)


def _pyfunc_predict(model, texts: list[str]) -> list[Prediction]:
    import pandas as pd

    out = model.predict(pd.DataFrame({"text": texts}))
    return list(zip(out["label"].astype(str), out["score"].astype(float), strict=True))


def registered_vocabulary(name: str, version: str) -> frozenset[str]:
    """The training vocabulary registered with ``models:/NAME/VERSION`` (the pyfunc's
    ``reference_profile`` artifact, which the exact form reads in ``load_context``); empty for
    a version registered before profiles (OOV not counted, as in the exact form)."""
    import mlflow
    import yaml

    from tasks.core.registry.pyfunc import PROFILE_ARTIFACT

    uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory() as tmp:
        spec = yaml.safe_load(
            Path(mlflow.artifacts.download_artifacts(f"{uri}/MLmodel", dst_path=tmp)).read_text()
        )
        found = spec.get("flavors", {}).get("python_function", {}).get("artifacts", {})
        path = (found.get(PROFILE_ARTIFACT) or {}).get("path")
        if not path:
            return frozenset()
        local = mlflow.artifacts.download_artifacts(f"{uri}/{path}", dst_path=tmp)
        return frozenset(json.loads(Path(local).read_text()).get("vocabulary", ()))


def load_version(name: str, version: str, threads: int = 1):
    """A predict function for ``models:/NAME/VERSION`` in its served form; its ``form``
    attribute names the form (``exact``, ``onnx-int8``, ``onnx-int8-token``, ``onnx-fp32``), ``labels`` the
    classes it predicts (feedback is checked against them)."""
    import mlflow

    from tasks.core.tracking import client

    mlc = client(mlflow.get_tracking_uri())
    found = mlc.get_model_version(name, version)
    form = served_form(found.tags or {})
    if form != EXACT:
        folder = mlflow.artifacts.download_artifacts(
            run_id=(found.tags or {}).get(RECORD_TAG) or found.run_id,
            artifact_path=f"{ARTIFACT_ROOT}/{form}",
        )
        onnx = OnnxClassifier(Path(folder), threads, registered_vocabulary(name, version))
        predict, labels = onnx.predict_texts, tuple(onnx.labels)
    else:
        loaded = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
        if hasattr(loaded.unwrap_python_model(), "generation"):  # a causal LM: /generate
            from tasks.core.serving.generate import generator_predict

            return generator_predict(loaded.unwrap_python_model())
        predict, labels = _exact_predict(loaded)

    def served(texts: list[str]) -> list[Prediction]:
        return predict(texts)

    served.form, served.labels = form, labels
    return served
