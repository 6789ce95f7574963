"""The benchmark scripts under tests/benchmarks/ stay runnable: each imports and answers --help.

They are run by hand (ratios against a baseline, never timed tests), so nothing else would
notice a script broken by a renamed function or a moved module.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPTS = sorted((REPO / "tests" / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmarks():
    assert {p.stem for p in SCRIPTS} >= {"bench_training", "bench_serving", "bench_quickstart"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_benchmark_script_answers_help(script):
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=REPO, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def test_the_lean_load_client_speaks_http_over_keep_alive():
    """bench_serving's client against a real uvicorn on loopback: answers, status codes, one
    connection for many requests, a server that closes, and a dead server as an error."""
    import asyncio
    import threading
    import time

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    from loadgen import Connection, HttpError, parse_head

    peers = set()

    async def predict(request):
        peers.add(request.client.port)
        body = await request.json()
        if body.get("text") == "bad":
            return JSONResponse({"error": "bad"}, status_code=422)
        headers = {"connection": "close"} if body.get("text") == "bye" else None
        return JSONResponse({"echo": body["text"]}, headers=headers)

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]

    async def exchange():
        connection = Connection(f"http://127.0.0.1:{port}")
        answers = [await connection.post("/predict", {"text": f"t{i}"}) for i in range(5)]
        bad = await connection.post("/predict", {"text": "bad"})
        bye = await connection.post("/predict", {"text": "bye"})
        after = await connection.post("/predict", {"text": "again"})  # a new connection
        connection.close()
        return answers, bad, bye, after

    try:
        answers, bad, bye, after = asyncio.run(exchange())
    finally:
        server.should_exit = True
        thread.join(10)
    assert [a[0] for a in answers] == [200] * 5 and answers[3][1] == b'{"echo":"t3"}'
    assert bad[0] == 422 and bye[0] == 200 and after == (200, b'{"echo":"again"}')
    assert len(peers) == 2  # keep-alive: one connection until the server closed it

    async def dead():
        await Connection(f"http://127.0.0.1:{port}", timeout_s=5).post("/predict", {})

    with pytest.raises(HttpError):
        asyncio.run(dead())
    with pytest.raises(HttpError, match="Content-Length"):
        parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")


DOC = """# Benchmarks

## Training

old lead

### On another machine

history

## Serving

serving lead
"""


@pytest.mark.parametrize(
    ("head", "kept", "gone"),
    [
        ("## Training", ["### On another machine\n\nhistory", "serving lead"], ["old lead"]),
        ("## Serving", ["old lead", "history"], ["serving lead"]),
    ],
)
def test_write_docs_replaces_a_sections_lead_and_keeps_its_history(head, kept, gone):
    """A benchmark's --write-docs rewrites the lead of its section only: the hand-written
    ### subsections (runs on other machines) and the other sections stay."""
    sys.path.insert(0, str(REPO / "tests" / "benchmarks"))
    from docsection import replace_lead

    doc = replace_lead(DOC, head, "new figures\n")
    assert "new figures" in doc and doc.count(head) == 1
    assert all(k in doc for k in kept) and not any(g in doc for g in gone)
    assert doc.index(head) < doc.index("new figures")
    assert replace_lead("# B\n", "## Quickstart", "x") == "# B\n\n## Quickstart\n\nx\n"
