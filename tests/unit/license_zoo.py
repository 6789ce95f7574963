"""A zoo of tiny random models whose cards and files exercise every branch of the audit.

Each is a real tiny BERT (``tests/tiny.py``) imported into a Hugging Face cache, changed in
one way: its license, a missing license, pickle-only weights, custom code, a leaked token.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.tiny import build_tiny_bert

# A fake token with the Hub's shape; the secret scan must flag it (and never echo it whole).
LEAKED_TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
LICENSE_LINK = "https://example.com/acme-community-license"


def card(front_matter: str, body: str = "# tiny-bert\n\nRandom weights, for tests only.\n") -> str:
    return f"---\n{front_matter}library_name: transformers\npipeline_tag: text-classification\n---\n{body}"


CARDS = {
    "apache": card("license: apache-2.0\n"),
    "mit": card("license: mit\n"),
    "noncommercial": card("license: cc-by-nc-4.0\n"),
    "llama": card("license: llama3.1\n"),
    "custom": card(
        f"license: other\nlicense_name: acme-community-1.0\nlicense_link: {LICENSE_LINK}\n"
    ),
    "unlicensed": card(""),
    "pickle-only": card("license: apache-2.0\n"),
    "remote-code": card("license: apache-2.0\n"),
    "leaky": card(
        "license: apache-2.0\n",
        f"# tiny-bert\n\nDownload with:\n\n    HF_TOKEN={LEAKED_TOKEN} hf download it\n",
    ),
}
MODELING = '''"""Custom code a repo ships; the audit must notice it without running it."""
from transformers import BertForSequenceClassification


class TinyForSequenceClassification(BertForSequenceClassification):
    pass
'''


def _pickle_only(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    torch.save(load_file(weights), folder / "pytorch_model.bin")
    weights.unlink()


def _remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {
        "AutoConfig": "configuration_tiny.TinyConfig",
        "AutoModelForSequenceClassification": "modeling_tiny.TinyForSequenceClassification",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "modeling_tiny.py").write_text(MODELING)


EDITS = {"pickle-only": _pickle_only, "remote-code": _remote_code}


def build_zoo(work: Path, cache_dir: Path, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Build the zoo models (all, or ``names``) under ``work`` and import them into
    ``cache_dir`` as ``zoo/NAME``: {name: revision}."""
    from tasks.core.catalog.mirror import import_folder

    revisions = {}
    for name in names or tuple(CARDS):
        folder = build_tiny_bert(work / name, card=CARDS[name])
        if name in EDITS:
            EDITS[name](folder)
        revisions[name] = import_folder(folder, f"zoo/{name}", cache_dir).revision
    return revisions
