"""The registered model: an MLflow pyfunc, text in, (label, score) out.

Its artifacts are the adapter and the tokenizer; the base model is a reference (repo id +
pinned revision) resolved through the Hugging Face cache at load time, so it loads offline
from the local mirror and online from the Hub. (``mlflow.transformers`` can only reference a
PEFT base by asking the Hub for its latest commit, which fails offline and would not pin what
was audited.) cloudpickle records this class by its import path: moving it breaks every
registered version, which is why ``tasks/core/registry/__init__.py`` keeps the old name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema

from tasks.core.home import Home

PROFILE_ARTIFACT = "reference_profile"  # tasks.core.monitoring.profile.MODEL_ARTIFACT
PREPROCESSING_ARTIFACT = "preprocessing"  # artifact key (and file stem) of the recorded steps
GENERATION_ARTIFACT = "generation"  # the pinned GenerationSpec of a generator (JSON)
PIP_REQUIREMENTS = ["torch==2.13.0", "transformers>=4.57", "peft>=0.17", "mlflow>=3.5", "pandas"]
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "text")]),
    outputs=Schema([ColSpec("string", "label"), ColSpec("double", "score")]),
)

GENERATOR_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "prompt")]),
    outputs=Schema([ColSpec("string", "output"), ColSpec("long", "output_tokens")]),
)


class LoraClassifierModel(mlflow.pyfunc.PythonModel):
    """pyfunc: text in, (label, score) out, from base repo@revision + the logged adapter.

    A version registered with a ``preprocessing`` artifact (what the data stage did to every
    training text: normalisation, PII redaction) applies it to each input first, through
    the same ``Preprocessing.apply`` evaluation used; one registered without it (older
    versions) passes texts through unchanged, as it always did.
    """

    def load_context(self, context):
        from tasks.core.data.preprocess import Preprocessing
        from tasks.core.training.modeling import load_classifier

        # Inside a loraflow home, its mirror; elsewhere the standard Hugging Face cache.
        cache = Home.from_env().hf_hub_cache if os.environ.get("LORAFLOW_HOME") else None
        adapter = Path(context.artifacts["adapter"])
        # The LoRA folded into the base, as evaluation scored it: the same function, faster.
        self.model, self.tokenizer, self.labels = load_classifier(adapter, cache, merge=True)
        recorded = (context.artifacts or {}).get(PREPROCESSING_ARTIFACT)
        self.preprocessing = Preprocessing.read(recorded) if recorded else None
        profile = (context.artifacts or {}).get(PROFILE_ARTIFACT)
        vocab = json.loads(Path(profile).read_text()).get("vocabulary", ()) if profile else ()
        self.vocabulary = frozenset(vocab)  # empty: registered before profiles, OOV not counted

    @property
    def preprocess(self):
        """The recorded preprocessing as a function of texts, or None (older versions)."""
        preprocessing = getattr(self, "preprocessing", None)
        return preprocessing.apply if preprocessing is not None else None

    def predict(self, context, model_input, params=None):
        if isinstance(model_input, pd.DataFrame):
            column = "text" if "text" in model_input.columns else model_input.columns[0]
            texts = model_input[column].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        probs = self.predict_proba(texts)
        best = probs.argmax(axis=1)
        return pd.DataFrame(
            {"label": [self.labels[i] for i in best], "score": probs.max(axis=1).astype(float)}
        )

    def predict_proba(self, texts: list[str]):
        """Class probabilities of the texts after the recorded preprocessing, at the precision
        evaluation used (bf16 autocast where the hardware has native bf16, ``precision:
        auto``): the exact model as it was evaluated."""
        from tasks.core.training.modeling import predict_proba
        from tasks.core.training.precision import resolve

        if self.preprocess is not None:
            texts = self.preprocess(texts)
        dtype = resolve("auto").dtype
        return predict_proba(self.model, self.tokenizer, texts, batch_size=64, dtype=dtype)

    def predict_texts(self, texts: list[str], batch_size: int = 64) -> list[tuple]:
        """(label, score, monitoring ``Features``) per text, without a DataFrame: the service's
        per-batch call. The same forward pass as ``predict_proba`` (same precision, texts
        sorted by token length in passes of ``batch_size``) also yields what the live window
        keeps: token count, OOV words against the version's training vocabulary, the
        embedding sketch; never the text."""
        from tasks.core.monitoring.profile import score_with_features
        from tasks.core.training.precision import resolve

        if self.preprocess is not None:
            texts = self.preprocess(texts)
        vocab = getattr(self, "vocabulary", frozenset())
        dtype = resolve("auto").dtype
        probs, feats = score_with_features(
            self.model, self.tokenizer, texts, vocab, batch_size, 128, dtype
        )
        best = probs.argmax(1)
        return [(self.labels[i], float(probs[row, i]), feats[row]) for row, i in enumerate(best)]


class LoraGeneratorModel(mlflow.pyfunc.PythonModel):
    """pyfunc: prompt in (a user message, or chat turns as JSON in ``messages``), answer out.

    Decodes with the generation settings pinned at evaluation (the ``generation`` artifact:
    token budget, temperature, stop sequences, and the data's system prompt), through the same
    ``generate_batch`` the evaluation used, each turn through the recorded preprocessing; the
    base decoder comes from the mirror by repo id + pinned revision.
    """

    def load_context(self, context):
        import json

        from tasks.core.config.generation import GenerationSpec
        from tasks.core.data.preprocess import Preprocessing
        from tasks.core.training.generation import load_generator

        cache = Home.from_env().hf_hub_cache if os.environ.get("LORAFLOW_HOME") else None
        adapter = Path(context.artifacts["adapter"])
        loaded = load_generator(adapter, str(adapter), cache)
        self.model, self.tokenizer = loaded.model, loaded.tokenizer
        pinned = json.loads(Path(context.artifacts[GENERATION_ARTIFACT]).read_text())
        self.generation = GenerationSpec.model_validate(pinned["generation"])
        self.system_prompt = pinned.get("system_prompt")
        recorded = context.artifacts.get(PREPROCESSING_ARTIFACT)
        self.preprocessing = Preprocessing.read(recorded) if recorded else None

    @staticmethod
    def prompts(model_input) -> list:
        """Chat turns (``messages`` column, JSON) or user messages (``prompt`` column)."""
        import json

        if isinstance(model_input, pd.DataFrame):
            if "messages" in model_input.columns:
                return [json.loads(m) if isinstance(m, str) else list(m)
                        for m in model_input["messages"]]  # fmt: skip
            column = "prompt" if "prompt" in model_input.columns else model_input.columns[0]
            return model_input[column].astype(str).tolist()
        return [str(p) for p in model_input]

    def predict(self, context, model_input, params=None):
        from tasks.core.training.generation import generate_batch

        spec = self.generation
        if params and params.get("max_new_tokens"):  # a smaller budget only, never a larger
            budget = min(int(params["max_new_tokens"]), spec.max_new_tokens)
            spec = spec.model_copy(update={"max_new_tokens": budget})
        from tasks.core.data.chat import served_turns

        preprocess = self.preprocessing.apply if self.preprocessing is not None else None
        prompts = [
            served_turns(p, self.system_prompt, preprocess) for p in self.prompts(model_input)
        ]
        answers = generate_batch(self.model, self.tokenizer, prompts, spec)
        return pd.DataFrame(
            {
                "output": [a.text for a in answers],
                "output_tokens": [a.output_tokens for a in answers],
            }
        )
