"""Which class ``AutoTokenizer`` builds for a mirrored model, read from its files alone.

``AutoTokenizer`` imports transformers' configuration code to read the model's config, and
that imports torch: about 2.7 s of CPU, against about 1.1 s for the tokenizer class itself
(measured here). The validate stage needs only the tokenizer, on the pipeline's critical path.

For the common case the choice is plain: ``tokenizer_config.json`` names the class that
transformers registers for the config's ``model_type`` (BERT's ``BertTokenizer`` for
``bert``), with no remote code. Then ``AutoTokenizer`` calls that class's ``from_pretrained``
with the same arguments, so building it directly gives the same tokenizer. Every other case
(a different class, remote code, the families and model ids transformers special-cases,
Llama's and Mistral's rules) returns None, and the caller uses ``AutoTokenizer``. The table
of registered classes is a snapshot of the locked transformers (``tokenizer_classes.json``;
another installed version always uses ``AutoTokenizer``):

    .venv/bin/python -m tasks.core.training.tokenizer_class   # after a transformers bump
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import json
from pathlib import Path

from tasks.core.catalog.heads import installed_version

SNAPSHOT = Path(__file__).with_name("tokenizer_classes.json")
# Classes whose choice has rules of its own in AutoTokenizer (ByteLevel Llama files, Mistral's
# formats), or that are the generic backends: always AutoTokenizer.
SPECIAL = {
    "LlamaTokenizer",
    "MistralCommonBackend",
    "TokenizersBackend",
    "PythonBackend",
    "PreTrainedTokenizerFast",
    "PreTrainedTokenizer",
}


def from_transformers() -> dict:
    """The tables read from the installed transformers (imports torch)."""
    from transformers.models.auto import tokenization_auto as auto
    from transformers.models.auto.configuration_auto import model_type_to_module_name

    type_class = {t: c for t, c in auto.TOKENIZER_MAPPING_NAMES.items() if c}
    class_module: dict[str, str] = {}
    for model_type, name in type_class.items():  # the first model type naming a class wins,
        class_module.setdefault(name, model_type_to_module_name(model_type))  # as there
    return {
        "type_class": type_class,
        "class_module": class_module,
        "incorrect_hub_class": sorted(auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS),
        "ids_to_tokenizers_backend": list(auto.MODEL_IDS_TO_TOKENIZERS_BACKEND),
    }


def _tables() -> dict | None:
    """The snapshot's tables when they are the installed transformers' (read once)."""
    return _read(SNAPSHOT, installed_version())


@functools.cache
def _read(path: Path, version: str) -> dict | None:
    if not path.is_file():
        return None
    snapshot = json.loads(path.read_text())
    return snapshot if snapshot.get("transformers") == version else None


def direct_class_name(repo_id: str, config: dict, tokenizer_config: dict) -> str | None:
    """The class AutoTokenizer picks for these files when the choice is plain; else None."""
    tables = _tables()
    name = tokenizer_config.get("tokenizer_class")
    if tables is None or not isinstance(name, str) or "auto_map" in tokenizer_config:
        return None
    name = name.removesuffix("Fast")  # as AutoTokenizer reads it
    model_type = config.get("model_type")
    if name in SPECIAL or tables["type_class"].get(model_type) != name:
        return None
    if {model_type, config.get("model_name")} & set(tables["incorrect_hub_class"]):
        return None
    if any(fnmatch.fnmatch(repo_id.lower(), p) for p in tables["ids_to_tokenizers_backend"]):
        return None
    return name if name in tables["class_module"] else None


def direct_class(repo_id: str, revision: str | None, cache_dir: Path | None):
    """The tokenizer class itself (its module imported, no torch), or None for AutoTokenizer."""
    from huggingface_hub import try_to_load_from_cache

    files = {}
    for filename in ("config.json", "tokenizer_config.json"):
        path = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        if not isinstance(path, str):
            return None  # not in the local cache: AutoTokenizer reports it
        files[filename] = json.loads(Path(path).read_text())
    name = direct_class_name(repo_id, files["config.json"], files["tokenizer_config.json"])
    if name is None:
        return None
    module = _tables()["class_module"][name]
    return getattr(importlib.import_module(f"transformers.models.{module}"), name, None)


def write_snapshot(path: Path = SNAPSHOT) -> None:
    snapshot = {"transformers": installed_version(), **from_transformers()}
    path.write_text(json.dumps(snapshot, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_snapshot()
    print(f"wrote {SNAPSHOT} for transformers {installed_version()}")
