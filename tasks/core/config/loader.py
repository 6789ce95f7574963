"""Load an experiment YAML (plus the files it ``extends``) into validated config models.

Experiment files are small diffs over a base file (``extends: ../base.yaml``), merged key by
key. Relative paths are resolved against the file that wrote them, so a config means the same
thing whatever the working directory. Errors are one line each and name the file, the key
path, the bad value and what is allowed, so a typo never reaches a running pipeline.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tasks.core.config.audit import LicensePolicy
from tasks.core.config.canary import CanaryPolicy
from tasks.core.config.evaluation import GatePolicy
from tasks.core.config.experiment import ExperimentConfig
from tasks.core.config.monitoring import MonitoringPolicy, SloPolicy
from tasks.core.digests import file_sha256
from tasks.core.errors import ConfigError

# Keys whose values are paths, resolved against the directory of the file that sets them.
PATH_KEYS = (
    ("data", "train", "path"),
    ("data", "eval", "path"),
    ("license", "policy_file"),
    ("gates", "policy_file"),
    ("gates", "golden", "path"),
    ("canary", "policy_file"),
)
MAX_EXTENDS_DEPTH = 8


@dataclass(frozen=True)
class LoadedConfig:
    """An experiment config with everything it references, validated once."""

    config: ExperimentConfig
    license_policy: LicensePolicy
    license_policy_sha256: str
    sources: tuple[Path, ...]
    gate_policy: GatePolicy | None = None  # the defaults ``gates:`` overrides, when it names one
    gate_policy_sha256: str = ""
    canary_policy: CanaryPolicy | None = None  # when ``canary.policy_file`` names one
    files: tuple[Path, ...] = ()  # every file read: the layers and the policies
    # (file, its data) from the gate policy's defaults to the experiment file: which file
    # set a key, for messages about settings that validate alone but not together.
    layers: tuple = field(default=(), compare=False, repr=False)

    def defined_in(self, *loc) -> Path:
        """The file that set the key at ``loc`` (the experiment file if none did)."""
        return _defined_in(list(self.layers), loc) if self.layers else self.sources[-1]

    @property
    def sha256(self) -> str:
        return section_hash(self.config)

    @property
    def gate_policy_version(self) -> str:
        return self.gate_policy.version if self.gate_policy else ""

    def resolved_yaml(self) -> str:
        return yaml.safe_dump(self.config.model_dump(mode="json"), sort_keys=False)


def section_hash(section: BaseModel | dict | None) -> str:
    """sha256 of a config section's canonical JSON: the cache key of what a stage reads."""
    data = section.model_dump(mode="json") if isinstance(section, BaseModel) else section
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key written twice in one mapping is an error:
    plain YAML keeps the last value silently, so a pasted ``batch_size`` would win unseen."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key; the base class reports it
                continue
            if first != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first set on line {first}); each key once",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if data is None:  # an empty file
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _resolve_paths(data: dict[str, Any], base_dir: Path) -> None:
    for keys in PATH_KEYS:
        node = data
        for key in keys[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(keys[-1]), str):
            node[keys[-1]] = str((base_dir / node[keys[-1]]).resolve())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_layers(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The chain of files from the root base to ``path``, each with resolved paths."""
    layers: list[tuple[Path, dict[str, Any]]] = []
    current: Path | None = Path(path).resolve()
    while current is not None:
        if len(layers) >= MAX_EXTENDS_DEPTH or any(p == current for p, _ in layers):
            raise ConfigError(
                f"{path}: 'extends' chain loops or is deeper than {MAX_EXTENDS_DEPTH}"
            )
        data = read_yaml(current)
        parent = data.pop("extends", None)
        if parent is not None and not isinstance(parent, str):
            raise ConfigError(f"{current}: extends: must be a relative file path, got {parent!r}")
        _resolve_paths(data, current.parent)
        layers.append((current, data))
        current = (current.parent / parent).resolve() if parent else None
    return list(reversed(layers))


def _defined_in(layers: list[tuple[Path, dict[str, Any]]], loc: tuple) -> Path:
    """The last file in the chain that sets the longest prefix of ``loc``."""
    for depth in range(len(loc), 0, -1):
        for path, data in reversed(layers):
            node: Any = data
            for key in loc[:depth]:
                if isinstance(node, dict) and key in node:
                    node = node[key]
                else:
                    break
            else:
                return path
    return layers[-1][0]


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for key in loc[:-1]:
        if isinstance(key, int):  # an item of a list field
            continue
        field = model.model_fields.get(str(key))
        annotation = getattr(field, "annotation", None)
        if typing.get_origin(annotation) in (list, tuple):
            annotation = typing.get_args(annotation)[0]
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def format_error(
    exc: ValidationError, layers: list[tuple[Path, dict[str, Any]]], model: type[BaseModel]
) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(part) for part in loc) or "(top level)"
        source = _defined_in(layers, loc)
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(model, loc))
            lines.append(f"{source}: {key}: unknown key; allowed here: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"{source}: {key}: required key is missing")
        else:
            # Sequences are tuples internally (deep immutability); in YAML they are lists.
            msg = err["msg"].removeprefix("Value error, ").replace("valid tuple", "valid list")
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"  # a section: too long
            lines.append(f"{source}: {key}: {msg}{shown}")
    return "; ".join(lines)


def validate_layers(model: type[BaseModel], layers: list[tuple[Path, dict[str, Any]]]):
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = deep_merge(merged, data)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(format_error(exc, layers, model)) from None


def load_policy(path: Path) -> LicensePolicy:
    return validate_layers(LicensePolicy, [(path, read_yaml(path))])


def load_canary_policy(path: str | Path) -> CanaryPolicy:
    return validate_layers(CanaryPolicy, [(Path(path), read_yaml(Path(path)))])


def load_monitoring_policy(path: str | Path) -> MonitoringPolicy:
    return validate_layers(MonitoringPolicy, [(Path(path), read_yaml(Path(path)))])


def load_slo_policy(path: str | Path) -> SloPolicy:
    return validate_layers(SloPolicy, [(Path(path), read_yaml(Path(path)))])


def _gate_policy_layer(path: Path) -> dict[str, Any]:
    data = read_yaml(path)
    _resolve_paths(data, path.parent)
    return data


def load_gate_policy(path: Path) -> GatePolicy:
    return validate_layers(GatePolicy, [(path, _gate_policy_layer(path))])


def _gate_policy_path(layers: list[tuple[Path, dict[str, Any]]]) -> Path | None:
    """The ``gates.policy_file`` the chain ends up with (already resolved), if it exists."""
    found = None
    for _, data in layers:
        gates = data.get("gates")
        if isinstance(gates, dict) and "policy_file" in gates:
            found = gates["policy_file"]
    # A missing file is reported by the schema, with its key path.
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


# Loaded configs of this process by path, each with the (mtime, size) of every file it read:
# the CLI (fail fast), the flow run's name and the flow body all ask for the same config, and
# get the one object validated once; an edited file is read again.
_LOADED: dict[Path, tuple[tuple, LoadedConfig]] = {}


def _stamp(files: tuple[Path, ...]) -> tuple:
    stamps = []
    for path in files:
        try:
            stat = path.stat()
        except OSError:
            return ()
        stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(stamps)


def load_config(path: str | Path) -> LoadedConfig:
    """Validate an experiment file and the policies it references; raise ConfigError if invalid.

    The gate policy's ``gates`` are the bottom layer under the experiment's ``gates:``, so the
    validated config holds the effective gates and errors name the file that set each key.
    Validated once per process while none of the files it read changes.
    """
    resolved = Path(path).resolve()
    cached = _LOADED.get(resolved)
    if cached is not None and cached[0] and cached[0] == _stamp(cached[1].files):
        return cached[1]
    loaded = _load_config(resolved)
    _LOADED[resolved] = (_stamp(loaded.files), loaded)
    return loaded


def _load_config(path: Path) -> LoadedConfig:
    layers = load_layers(path)
    gate_policy_path = _gate_policy_path(layers)
    gate_policy, defaults = None, []
    if gate_policy_path:
        gate_layer = _gate_policy_layer(gate_policy_path)
        gate_policy = validate_layers(GatePolicy, [(gate_policy_path, gate_layer)])
        defaults = [(gate_policy_path, {"gates": gate_layer["gates"]})]
    config = validate_layers(ExperimentConfig, defaults + layers)
    policy_path = config.license.policy_file
    canary_path = config.canary.policy_file
    policies = tuple(p for p in (policy_path, gate_policy_path, canary_path) if p)
    return LoadedConfig(
        config=config,
        license_policy=load_policy(policy_path),
        license_policy_sha256=file_sha256(policy_path),
        sources=tuple(p for p, _ in layers),
        gate_policy=gate_policy,
        gate_policy_sha256=file_sha256(gate_policy_path) if gate_policy_path else "",
        canary_policy=load_canary_policy(canary_path) if canary_path else None,
        files=tuple(p for p, _ in layers) + tuple(Path(p) for p in policies),
        layers=tuple(defaults + layers),
    )


def validate_file(path: str | Path) -> str:
    """Validate any shipped YAML by its kind; return a one-line summary of what it is."""
    path = Path(path)
    kind = read_yaml(path).get("kind")
    if kind == "license-policy":
        policy = load_policy(path)
        return f"license policy {policy.version}: {len(policy.allow)} allowed, {len(policy.deny)} denied"
    if kind == "canary-policy":
        canary = load_canary_policy(path)
        steps = " -> ".join(f"{s:g}%" for s in canary.steps)
        return f"canary policy {canary.version}: steps {steps}"
    if kind == "gate-policy":
        gate_policy = load_gate_policy(path)
        gates = gate_policy.gates
        return (
            f"gate policy {gate_policy.version}: {len(gates.absolute)} minimums, "
            f"{len(gates.maximum)} maximums, non-inferiority margin {gates.non_inferiority.margin}"
            f", {len(gates.slices)} slices"
        )
    if kind == "monitoring-policy":
        monitoring = load_monitoring_policy(path)
        return (
            f"monitoring policy {monitoring.version}: window {monitoring.live.window}, "
            f"stale after {monitoring.quality.max_days_since_validation:g} days"
        )
    if kind == "slo-policy":
        slo = load_slo_policy(path)
        names = ", ".join(f"{o.name} {o.target:g}" for o in slo.objectives)
        return f"slo policy {slo.version}: {names} over {slo.period_days} days"
    loaded = load_config(path)
    cfg = loaded.config
    model = cfg.discovery.repo_id or f"discovered ({cfg.discovery.task})"
    return f"experiment {cfg.name}: model {model}, data {cfg.data.name}, registry {cfg.registry.model_name}"


def git_commit(start: Path) -> str:
    """The project's commit for lineage ('unknown' outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def lineage(loaded: LoadedConfig) -> dict[str, str]:
    """Tags every run and version carries: which config, which policy, which code."""
    return {
        "config_file": str(loaded.sources[-1]),
        "config_sha256": loaded.sha256,
        "license_policy_version": loaded.license_policy.version,
        "license_policy_sha256": loaded.license_policy_sha256,
        **(
            {
                "gate_policy_version": loaded.gate_policy.version,
                "gate_policy_sha256": loaded.gate_policy_sha256,
            }
            if loaded.gate_policy
            else {}
        ),
        "git_commit": git_commit(Path(__file__).parent),
        "resolved_config": loaded.resolved_yaml(),
    }
