"""Stage 6, registration, and what a registered version tells afterwards.

``pyfunc`` the registered model itself (an MLflow pyfunc: adapter and tokenizer as artifacts,
the base as repo@revision); ``versions`` registry I/O: register once per run, read and move
aliases; ``lineage`` the full chain behind a version, read back from MLflow alone;
``model_card`` the version's card, generated from what the run recorded; ``serving_form`` the
version's optimised serving form (LoRA merged, ONNX Runtime, int8 or fp32), gated on
agreement with the exact model and recorded with its figures; ``token_int8`` that form's
int8 variant with a quantisation range per token (an ONNX graph rewrite); ``history`` the
append-only decision history (each decision an MLflow run of its own).
"""

# Models registered before the code was regrouped into packages were pickled (cloudpickle,
# by reference) as ``tasks.core.registry.LoraClassifierModel``, when ``registry`` was a
# module. Unpickling looks the name up on this package, so it is resolved here, lazily (the
# pyfunc imports MLflow). Nothing in the repository imports it from here.


def __getattr__(name: str):
    if name == "LoraClassifierModel":
        from tasks.core.registry.pyfunc import LoraClassifierModel

        return LoraClassifierModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
