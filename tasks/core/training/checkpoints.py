"""Resumable training state on disk: written atomically, found again by the run's identity.

A checkpoint is a folder ``step-NNNNNNNN`` holding the trainable (LoRA) weights, the optimizer
and scheduler states, every RNG state and the data position. It is written under a temporary
name and renamed into place, so a process killed mid-write leaves either the previous
checkpoint or the new one, never half of one. The root folder is keyed by the training
identity (the stage's cache key), so a retry - on this machine or, through the copy in the
run's MLflow artifacts, on another worker - finds it without being told where it is.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PREFIX = "step-"
STATE_FILE = "state.json"
NOTES_FILE = "notes.json"
KEEP = 2  # the newest checkpoint, plus the one before it in case the newest is being copied


@dataclass
class TrainState:
    """Where training stands: optimizer steps done and the data position of the next one."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # micro-batches of ``epoch`` already trained on
    samples: int = 0
    tokens: int = 0
    elapsed_s: float = 0.0  # training time before this process started


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, keys.tolist(), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted write skipped)."""
    if not Path(root).is_dir():
        return []
    found = [
        p
        for p in Path(root).iterdir()
        if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
    ]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: Path,
    state: TrainState,
    model,
    optimizer,
    scheduler,
    scaler=None,
    keep: int = KEEP,
    notes: dict | None = None,
) -> Path:
    """Write a checkpoint atomically and prune older ones; returns its folder.

    ``notes`` (JSON) travel with the checkpoint: the caller's own state at this step, such as
    metrics not yet written elsewhere.
    """
    root = Path(root)
    final = root / checkpoint_name(state.step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "adapter.safetensors"))
    extra = {"scaler": scaler.state_dict()} if scaler is not None else {}
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            **extra,
        },
        tmp / "optimizer.pt",
    )
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    (tmp / NOTES_FILE).write_text(json.dumps(notes or {}))
    for path in tmp.iterdir():  # on disk before the rename makes the checkpoint visible
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler=None) -> TrainState:
    """Restore weights, optimizer, scheduler and RNG in place; returns the saved position."""
    path = Path(path)
    weights = load_file(str(path / "adapter.safetensors"))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    if set(weights) != expected:
        raise ValueError(
            f"checkpoint {path} does not fit this model: {len(set(weights) ^ expected)} "
            "trainable tensors differ"
        )
    model.load_state_dict(weights, strict=False)
    extra = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    if scaler is not None and "scaler" in extra:
        scaler.load_state_dict(extra["scaler"])
    set_rng_state(extra["rng"])
    return TrainState(**json.loads((path / STATE_FILE).read_text()))


def read_state(path: Path) -> TrainState:
    return TrainState(**json.loads((Path(path) / STATE_FILE).read_text()))


def read_notes(path: Path) -> dict:
    notes = Path(path) / NOTES_FILE
    return json.loads(notes.read_text()) if notes.is_file() else {}


# The run's MLflow artifacts hold a copy, so a retry on another worker resumes too.
REMOTE_DIR = "checkpoints"
REMOTE_POINTER = f"{REMOTE_DIR}/latest.json"


def _artifact_repo(mlc, run_id: str):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    return get_artifact_repository(mlc.get_run(run_id).info.artifact_uri)


def upload_checkpoint(mlc, run_id: str, path: Path, previous: str | None = None) -> None:
    """Copy a checkpoint into the run's artifacts, then point ``latest.json`` at it."""
    mlc.log_artifacts(run_id, str(path), f"{REMOTE_DIR}/{Path(path).name}")
    mlc.log_dict(run_id, {"latest": Path(path).name}, REMOTE_POINTER)
    if previous and previous != Path(path).name:
        # Not every artifact store deletes; a stale copy is harmless.
        with contextlib.suppress(Exception):
            _artifact_repo(mlc, run_id).delete_artifacts(f"{REMOTE_DIR}/{previous}")


def download_latest(mlc, run_id: str, root: Path) -> Path | None:
    """The run's newest uploaded checkpoint, fetched into ``root``; None when it has none."""
    import mlflow

    if not any(a.path == REMOTE_POINTER for a in mlc.list_artifacts(run_id, REMOTE_DIR)):
        return None
    pointer = mlflow.artifacts.load_dict(
        f"{mlc.get_run(run_id).info.artifact_uri}/{REMOTE_POINTER}"
    )
    name = pointer["latest"]
    staging = Path(root) / f".download-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    mlflow.artifacts.download_artifacts(
        run_id=run_id,
        artifact_path=f"{REMOTE_DIR}/{name}",
        dst_path=str(staging),
        tracking_uri=mlc.tracking_uri,
    )
    fetched = next(p.parent for p in staging.rglob(STATE_FILE))  # layout varies by store
    os.replace(fetched, Path(root) / name)
    shutil.rmtree(staging, ignore_errors=True)
    return Path(root) / name


def remove_remote(mlc, run_id: str) -> None:
    """Drop the run's checkpoint copies once the adapter is logged (best effort)."""
    with contextlib.suppress(Exception):
        _artifact_repo(mlc, run_id).delete_artifacts(REMOTE_DIR)
