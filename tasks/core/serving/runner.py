"""Run the service: in the foreground (`loraflow serve`) or on an ephemeral loopback port in a
background thread (the canary, tests, benchmarks), with the same app either way."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from functools import partial

import httpx
import uvicorn
from fastapi import FastAPI

from tasks.core.config.canary import ServingSpec
from tasks.core.config.monitoring import LiveSpec
from tasks.core.errors import PortInUse
from tasks.core.serving.app import create_app
from tasks.core.serving.models import Loader, ModelHolder, pyfunc_loader, read_registry
from tasks.core.serving.telemetry import ServiceMetrics

LOOPBACK = "127.0.0.1"
LOOPBACK_POLL_S = 0.25  # registry reads of the in-process canary service (policy: 2 s)


def build_service(
    name: str,
    spec: ServingSpec,
    tracking_uri: str,
    load: Loader | None = None,
    live: LiveSpec | None = None,
) -> FastAPI:
    """The app for registered model ``name``, following its aliases in ``tracking_uri``;
    versions load in their served form (``runtime.load_version``) unless ``load`` says else;
    ``live``: the monitoring policy's live window (default: features only, no text)."""
    from tasks.core.tracking import client

    load = load or partial(pyfunc_loader, threads=spec.torch_threads)
    mlc = client(tracking_uri)

    def lease_expired(lease) -> None:  # a replica that sees it first writes the record
        from tasks.core.promotion.canary_io import expire_lease
        from tasks.core.registry.history import actor_service

        expire_lease(mlc, name, lease, actor_service())

    holder = ModelHolder(
        name, spec, ServiceMetrics(), lambda: read_registry(mlc, name), load, lease_expired
    )
    return create_app(holder, live=live)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on host:port, or PortInUse naming the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP (this one's is 0);
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {exc.strerror}; use --port") from None
    return sock


def serve_foreground(app: FastAPI, sock: socket.socket) -> None:
    """Serve on an already bound socket until Ctrl-C / SIGTERM. No access log: a line per
    request costs the event loop time the requests need (/metrics counts them by version)."""
    config = uvicorn.Config(app, log_level="info", lifespan="on", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


class BackgroundServer:
    """``with BackgroundServer(app) as server: server.url`` - uvicorn on 127.0.0.1:<free port>.

    The socket is bound before the thread starts, so the URL is known and no other process
    can take the port in between.
    """

    def __init__(self, app: FastAPI, host: str = LOOPBACK):
        self.app = app
        self.sock = bind(host, 0)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"service on {self.url} did not start")
            time.sleep(0.02)
        return self

    def wait_ready(self, timeout_s: float, until=None) -> dict:
        return wait_ready(self.url, timeout_s, until)

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        self.sock.close()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_ready(url: str, timeout_s: float, until=None) -> dict:
    """Poll ``/readyz`` until it answers 200 (and ``until(state)`` holds); return its state."""
    deadline = time.monotonic() + timeout_s
    state: dict = {}
    with httpx.Client(base_url=url, timeout=5) as http:
        while time.monotonic() < deadline:
            try:
                response = http.get("/readyz")
                state = response.json()
                if response.status_code == 200 and (until is None or until(state)):
                    return state
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    raise TimeoutError(f"service {url} not in the expected state after {timeout_s} s: {state}")


@contextmanager
def loopback_service(name: str, spec: ServingSpec, tracking_uri: str, url: str | None = None):
    """Yield the URL of a service for ``name``: ``url`` itself when one is running already,
    else a fresh in-process one on 127.0.0.1 that stops when the block ends."""
    if url:
        yield url.rstrip("/")
        return
    # In-process, beside the flow that moves the weights: it reads the local registry often,
    # so a canary step waits a fraction of a second for its share, not a whole poll period.
    quick = spec.model_copy(update={"poll_seconds": min(spec.poll_seconds, LOOPBACK_POLL_S)})
    with BackgroundServer(build_service(name, quick, tracking_uri)) as server:
        yield server.url


def scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=30)
    response.raise_for_status()
    return response.text
