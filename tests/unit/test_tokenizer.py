"""Data validation counts tokens with the base's tokenizer without importing PEFT: the
pipeline's process imports PEFT later, in a thread, while the training processes compute."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO
from tests.flows.conftest import TINY_REPO

PROBE = """
import sys
from tasks.core.training.refs import ModelRef
from tasks.core.training.tokenizer import load_tokenizer
tokenizer = load_tokenizer(ModelRef(sys.argv[1], sys.argv[2]), cache_dir=sys.argv[3])
print(len(tokenizer("a good film")["input_ids"]), "peft" in sys.modules)
"""


def test_the_tokenizer_loads_from_the_mirror_without_peft(home, tiny_bert_dir):
    from tasks.core.catalog.mirror import import_folder

    revision = import_folder(tiny_bert_dir, TINY_REPO, home.hf_hub_cache).revision
    done = subprocess.run(
        [sys.executable, "-c", PROBE, TINY_REPO, revision, str(home.hf_hub_cache)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    tokens, peft_loaded = done.stdout.split()
    assert int(tokens) >= 3 and peft_loaded == "False"
