"""The loaded model versions: champion and challenger, following the registry's aliases.

The registry is the one source of truth. A poll reads where ``champion`` and ``challenger``
point and the canary's traffic lease (a tag on the registered model, renewed by the promotion
flow while it runs; an expired lease routes nothing to the challenger); a version not loaded yet is loaded *beside* the current ones on a worker thread, then
swapped in on the event loop in one step. Requests count themselves in and out of the
version they were routed to, and a replaced version is closed only when its last request is
answered: an alias flip under load fails nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from tasks.core.config.canary import ServingSpec
from tasks.core.errors import ServiceNotReady
from tasks.core.promotion.lease import (
    LEASE_TAG,
    LEGACY_WEIGHT_TAG,
    Lease,
    Routing,
    decode,
    routing,
)
from tasks.core.serving.batcher import MicroBatcher, PredictFn
from tasks.core.serving.routing import to_challenger
from tasks.core.serving.telemetry import ServiceMetrics

log = logging.getLogger("loraflow.serving")
Loader = Callable[[str, str], PredictFn]


@dataclass(frozen=True)
class RegistryState:
    champion: str | None
    challenger: str | None
    lease: Lease | None = None  # None: no canary has granted one
    legacy_percent: bool = False  # a bare percent tag of loraflow before leases


def read_registry(mlc, name: str) -> RegistryState:
    """Aliases and canary lease of one registered model (all None if it does not exist)."""
    from mlflow.exceptions import MlflowException

    try:
        model = mlc.get_registered_model(name)
    except MlflowException:
        return RegistryState(None, None)
    aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
    tags = model.tags or {}
    return RegistryState(
        aliases.get("champion"),
        aliases.get("challenger"),
        decode(tags.get(LEASE_TAG)),
        LEGACY_WEIGHT_TAG in tags,
    )


def torch_threads(count: int, nice: int = 0) -> None:
    """Set up a predict thread: its intra-op threads (OpenMP's setting is per thread), so two
    models and the event loop do not oversubscribe; and ``nice``, its CPU priority below the
    event loop's (Linux: a thread is a task of its own), so scoring never starves the loop
    that accepts and answers requests: under load the loop keeps queueing what arrives and
    the next batch is full, where an even share left requests waiting in socket buffers."""
    if count > 0:
        import torch

        torch.set_num_threads(count)
    if nice > 0 and hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):  # a platform without per-thread priorities
            tid = threading.get_native_id()  # starts at its creator's niceness
            os.setpriority(
                os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice)
            )


def pyfunc_loader(name: str, version: str, threads: int = 1) -> PredictFn:
    """Load ``models:/NAME/VERSION`` (the version the alias pointed at when read) in its
    served form: the optimised one when it passed its gate, else the exact pyfunc
    (``runtime.load_version``; the function's ``form`` attribute names it)."""
    from tasks.core.serving.runtime import load_version

    return load_version(name, version, threads)


@dataclass(eq=False)
class ServedModel:
    version: str
    batcher: MicroBatcher
    inflight: int = 0
    form: str = "exact"  # exact, onnx-int8, onnx-int8-token, onnx-fp32 (runtime.served_form)
    generator: bool = False  # a causal LM: answers /generate, not /predict
    max_new_tokens: int | None = None  # a generator's pinned token budget


class ModelHolder:
    def __init__(
        self,
        name: str,
        spec: ServingSpec,
        metrics: ServiceMetrics,
        read_state: Callable[[], RegistryState],
        load: Loader = pyfunc_loader,
        on_lease_expired: Callable[[Lease], None] | None = None,
    ):
        self.name, self.spec, self.metrics = name, spec, metrics
        self.read_state, self.load = read_state, load
        self.on_lease_expired = on_lease_expired
        self.champion: ServedModel | None = None
        self.challenger: ServedModel | None = None
        self.percent = spec.challenger_percent
        self.lease: Lease | None = None
        self.routing = Routing(spec.challenger_percent, "none")
        self._expired_seen: set[str] = set()
        self.load_errors: dict[str, str] = {}
        # Class names of every version loaded so far (kept after a swap: feedback on an
        # earlier prediction is checked against the version that made it).
        self.labels: dict[str, tuple[str, ...]] = {}
        self._poller: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def stop(self) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for model in {self.champion, self.challenger} - {None}:
            await model.batcher.close(drain_timeout_s=5)
        self.champion = self.challenger = None

    async def _poll(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # a registry hiccup must not stop the service
                log.exception("registry poll failed")
            await asyncio.sleep(self.spec.poll_seconds)

    async def refresh(self) -> None:
        """Read the registry once; load what is new beside the old; swap in one step."""
        state = await asyncio.to_thread(self.read_state)
        loaded = {m.version: m for m in (self.champion, self.challenger) if m is not None}
        wanted_challenger = state.challenger if state.challenger != state.champion else None
        for version in (state.champion, wanted_challenger):
            if version is not None and version not in loaded:
                try:
                    loaded[version] = await self._load(version)
                    self.load_errors.pop(version, None)
                except Exception as exc:  # keep serving what is loaded; retry next poll
                    self.load_errors[version] = f"{type(exc).__name__}: {exc}"
                    log.exception("loading %s version %s failed", self.name, version)
        # The swap: no await from here on, so no request sees a half-applied state.
        old = {self.champion, self.challenger} - {None}
        champion = loaded.get(state.champion) if state.champion else None
        challenger = loaded.get(wanted_challenger) if wanted_challenger else None
        if champion is None and state.champion is not None:
            champion = self.champion  # the new champion failed to load: keep the old one
        if champion is not self.champion and champion is not None:
            self.metrics.swaps.labels("champion").inc()
        if challenger is not self.challenger and challenger is not None:
            self.metrics.swaps.labels("challenger").inc()
        self.champion, self.challenger = champion, challenger
        self._apply_lease(state)
        self._export_state()
        kept = {self.champion, self.challenger} - {None}
        for model in old - kept:
            self._spawn(self._retire(model))
        for model in set(loaded.values()) - kept - old:
            self._spawn(self._retire(model))  # loaded but no longer wanted

    def _apply_lease(self, state: RegistryState) -> None:
        """The challenger's share from the lease at this moment; an expiry is reported once."""
        self.lease = state.lease
        self.routing = routing(state.lease, time.time(), self.spec.challenger_percent)
        if state.legacy_percent and state.lease is None:
            # An orphan of loraflow before leases: it never expires, so it is not obeyed.
            self.routing = Routing(0.0, "expired")
        self.percent = self.routing.percent
        lease = state.lease
        expired = self.routing.state == "expired" and lease is not None
        if expired and lease.id not in self._expired_seen:
            self._expired_seen.add(lease.id)
            self.metrics.lease_expired.inc()
            log.warning(
                    "canary lease of %s v%s (%s %% for %s) expired %.0f s ago: routing every "
                    "request to the champion",
                    self.name, lease.version, lease.percent, lease.holder,
                    -self.routing.seconds_left,
                )  # fmt: skip
            if self.on_lease_expired is not None:
                self._spawn(asyncio.to_thread(self.on_lease_expired, lease))

    async def _load(self, version: str) -> ServedModel:
        predict = await asyncio.to_thread(self.load, self.name, version)
        labels = tuple(getattr(predict, "labels", ()) or ())
        if labels:
            self.labels[version] = labels
        batcher = MicroBatcher(
            predict,
            self.spec.max_batch_size,
            self.spec.max_wait_ms / 1000,
            name=f"v{version}",
            on_batch=self.metrics.batch_size.labels(version).observe,
            initializer=partial(torch_threads, self.spec.torch_threads, self.spec.predict_nice),
            workers=self.spec.workers,
        )
        return ServedModel(
            version,
            batcher.start(),
            form=getattr(predict, "form", "exact"),
            generator=bool(getattr(predict, "generator", False)),
            max_new_tokens=getattr(predict, "max_new_tokens", None),
        )

    async def _retire(self, model: ServedModel, patience_s: float = 300.0) -> None:
        """Close a replaced version once its last routed request has been answered."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience_s
        while model.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await model.batcher.close()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _export_state(self) -> None:
        self.metrics.loaded.clear()
        for role, model in (("champion", self.champion), ("challenger", self.challenger)):
            if model is not None:
                self.metrics.loaded.labels(model.version, role, model.form).set(1)
        self.metrics.weight.set(self.percent if self.challenger else 0)

    # -- requests ----------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.champion is not None

    def pick(self, key: str) -> tuple[ServedModel, str]:
        """The version this key is routed to, counted in (call ``release`` when answered)."""
        if self.champion is None:
            raise ServiceNotReady("no champion loaded yet")
        if self.challenger is not None and to_challenger(key, self.percent):
            model, role = self.challenger, "challenger"
        else:
            model, role = self.champion, "champion"
        model.inflight += 1
        return model, role

    def pick_champion(self) -> ServedModel | None:
        if self.champion is not None:
            self.champion.inflight += 1
        return self.champion

    @staticmethod
    def release(model: ServedModel) -> None:
        model.inflight -= 1

    def state(self) -> dict:
        return {
            "model": self.name,
            "ready": self.ready,
            "champion": self.champion.version if self.champion else None,
            "challenger": self.challenger.version if self.challenger else None,
            "challenger_percent": self.percent if self.challenger else 0.0,
            # How each is served: its optimised form when that passed its gate, else exact.
            "forms": {
                role: model.form
                for role, model in (("champion", self.champion), ("challenger", self.challenger))
                if model is not None
            },
            "canary": self._canary_state(),
            "load_errors": dict(self.load_errors),
        }

    def _canary_state(self) -> dict:
        lease = self.lease
        out = {"state": self.routing.state}
        if lease is not None:
            out |= {
                "holder": lease.holder,
                "version": lease.version,
                "step": lease.step,
                "lease_percent": lease.percent,
                "seconds_left": round(self.routing.seconds_left, 1),
                "ended": lease.ended,
            }
        return out
