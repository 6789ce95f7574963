"""Benchmark: discovery over a local mirror of 50 models, against a plain ``scan_cache_dir``.

Run: ``.venv/bin/python tests/benchmarks/bench_discovery.py [--models 50] [--repeat 7]``

Builds N small model folders (config.json, a safetensors file, a model card with one of several
licenses; they need not be loadable), imports them with ``tasks/core/catalog/mirror.py`` into a
temporary Hugging Face cache, then times, side by side in this one process:

- baseline: ``huggingface_hub.scan_cache_dir`` (what any cache-reading tool pays),
- ``discover()``: the scan plus reading every config, card and safetensors header, the fit
  checks and the ranking,
- the audit of the top candidate (license + supply chain, weight sha256 included).

Target: ``discover()`` well under a second for 50 models.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from huggingface_hub import scan_cache_dir
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tasks.core.audit.licenses import audit
from tasks.core.audit.supply_chain import gather_facts
from tasks.core.catalog.mirror import MirrorCatalog, import_folder
from tasks.core.config.audit import DiscoverySpec
from tasks.core.config.loader import load_policy
from tasks.core.discovery import discover  # noqa: E402

LICENSES = ["apache-2.0", "mit", "cc-by-nc-4.0", "llama3.1", "bsd-3-clause", None]
MODEL_TYPES = ["bert", "distilbert", "roberta", "deberta-v2", "electra"]
POLICY = Path(__file__).resolve().parents[2] / "configs/policies/licenses.yaml"


def build_mirror(root: Path, count: int) -> Path:
    cache = root / "hub"
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / "models" / f"m{i:03d}"
        folder.mkdir(parents=True)
        hidden = 16 * (1 + i % 8)
        (folder / "config.json").write_text(
            json.dumps({"model_type": MODEL_TYPES[i % len(MODEL_TYPES)], "hidden_size": hidden})
        )
        tensors = {
            "embeddings.weight": rng.standard_normal((64, hidden), dtype=np.float32),
            "classifier.weight": rng.standard_normal((2, hidden), dtype=np.float32),
        }
        save_file(tensors, str(folder / "model.safetensors"))
        license_line = f"license: {LICENSES[i % len(LICENSES)]}\n" if LICENSES[i % 6] else ""
        (folder / "README.md").write_text(
            f"---\n{license_line}library_name: transformers\npipeline_tag: text-classification\n"
            f"language: [en]\n---\n# model {i}\n"
        )
        import_folder(folder, f"bench-org/model-{i:03d}", cache)
    return cache


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-discovery-") as tmp:
        started = time.perf_counter()
        cache = build_mirror(Path(tmp), args.models)
        build_s = time.perf_counter() - started
        catalog = MirrorCatalog(cache)
        spec = DiscoverySpec(max_candidates=args.models)
        policy = load_policy(POLICY)

        base_s, info = timed(lambda: scan_cache_dir(cache), args.repeat)
        disc_s, found = timed(lambda: discover(spec, catalog), args.repeat)
        top = found.candidates[0]
        audit_s, record = timed(
            lambda: audit(top, gather_facts(catalog, top), (), policy, "0" * 64, ()), args.repeat
        )

    print(f"mirror: {len(info.repos)} models built and imported in {build_s:.2f} s")
    print(f"median of {args.repeat} runs each:")
    print(f"  baseline scan_cache_dir      {base_s * 1000:8.1f} ms")
    print(
        f"  discover() (scan+read+rank)  {disc_s * 1000:8.1f} ms   "
        f"{disc_s / base_s:5.1f}x baseline   "
        f"({len(found.candidates)} ranked, {len(found.rejected)} rejected)"
    )
    print(f"  audit of the top candidate   {audit_s * 1000:8.1f} ms   verdict {record.verdict}")
    print(f"target: discover() < 1 s -> {'met' if disc_s < 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
