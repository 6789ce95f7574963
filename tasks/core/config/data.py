"""The ``data`` section: where each split comes from, how texts are mapped, checked and cleaned."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from tasks.core.config.spec import Spec

DATA_FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")


class SplitSpec(Spec):
    path: Path | None = Field(
        None,
        description="Data file, relative to the config file that names it (or set hub_id).",
    )
    format: Literal[DATA_FORMATS] | None = Field(  # type: ignore[valid-type]
        None, description="File format; default: from the file suffix."
    )
    header: bool = Field(
        True,
        description="csv/tsv: the first line names the columns. Without a header the columns "
        "are named by column_names, else '0', '1', ... in file order.",
    )
    column_names: tuple[str, ...] | None = Field(
        None, description="Column names in file order for a csv/tsv file without header line."
    )
    hub_id: str | None = Field(
        None,
        description="Hugging Face dataset id (ORG/NAME) read from the local datasets cache "
        "(HF_HOME; offline) instead of a file.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$",
    )
    hub_config: str | None = Field(None, description="Configuration (subset) of the Hub dataset.")
    hub_split: str | None = Field(
        None, description="Split of the Hub dataset to read (e.g. train, validation)."
    )
    text_column: str | None = Field(
        None, description="Classification: column holding the input text in this file."
    )
    label_column: str | None = Field(
        None, description="Classification: column holding the label (class id or class name)."
    )
    prompt_column: str | None = Field(
        None, description="Generative (causal-lm): column holding the prompt (the user turn)."
    )
    response_column: str | None = Field(
        None, description="Generative (causal-lm): column holding the reference response."
    )
    messages_column: str | None = Field(
        None,
        description="Generative (causal-lm): column holding a chat as a list of {role, content} "
        "turns (roles system, user, assistant); the last turn must be the assistant's answer.",
    )
    system_column: str | None = Field(
        None, description="Generative: column holding a per-row system prompt (optional)."
    )
    prompt_template: str | None = Field(
        None,
        description="Generative, instead of prompt_column: a Python format string over the "
        "row's columns, e.g. 'Review: {sentence}' (turns labelled data into instructions).",
    )
    response_template: str | None = Field(
        None,
        description="Generative, instead of response_column: a format string over the row's "
        'columns (after value_map), e.g. \'{{"sentiment": "{label}"}}\'.',
    )
    value_map: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Templates: per column, raw value -> text used in the templates, e.g. "
        "{label: {'0': negative, '1': positive}}.",
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Use a seeded subset of this many rows, stratified by class (each class "
        "keeps its share); None: all rows.",
    )

    @field_validator("path")
    @classmethod
    def _exists(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_file():
            raise ValueError(f"data file not found: {path}")
        return path

    @field_validator("value_map", mode="before")
    @classmethod
    def _raw_values_as_text(cls, mapping):
        """YAML reads ``0: negative`` with an int key; raw values are matched as text."""
        if isinstance(mapping, dict):
            return {
                col: ({str(k): v for k, v in m.items()} if isinstance(m, dict) else m)
                for col, m in mapping.items()
            }
        return mapping

    @property
    def template_columns(self) -> list[str]:
        """The columns the prompt/response templates name."""
        import string

        names = []
        for template in (self.prompt_template, self.response_template):
            for _, field, _, _ in string.Formatter().parse(template or ""):
                if field and field not in names:
                    names.append(field)
        return names

    @model_validator(mode="after")
    def _one_shape(self) -> SplitSpec:
        """Exactly one column mapping: text+label, prompt+response, or messages."""
        prompt = self.prompt_column or self.prompt_template
        response = self.response_column or self.response_template
        shapes = {
            "text_column + label_column": (self.text_column, self.label_column),
            "prompt_column + response_column (or their templates)": (prompt, response),
            "messages_column": (self.messages_column,),
        }
        started = [name for name, cols in shapes.items() if any(cols)]
        if len(started) != 1:
            raise ValueError(
                "map the columns one way: " + ", or ".join(shapes) + f" (got {started or 'none'})"
            )
        names = {
            "text_column + label_column": ("text_column", "label_column"),
            "messages_column": ("messages_column",),
        }.get(started[0], ("prompt_column", "response_column"))
        missing = [n for n, v in zip(names, shapes[started[0]], strict=True) if not v]
        if missing:
            raise ValueError(f"{started[0]} go together: {', '.join(missing)} is missing")
        if (self.prompt_column and self.prompt_template) or (
            self.response_column and self.response_template
        ):
            raise ValueError("set a column or a template for the prompt and response, not both")
        if self.system_column and self.shape != "generative":
            raise ValueError("system_column applies to generative (prompt or messages) data")
        return self

    @model_validator(mode="after")
    def _templates_parse(self) -> SplitSpec:
        try:
            self.template_columns  # noqa: B018 - parses the format strings
        except ValueError as exc:
            raise ValueError(
                f"prompt/response template is not a valid format string: {exc}"
            ) from None
        return self

    @property
    def shape(self) -> Literal["classification", "generative"]:
        return "classification" if self.text_column else "generative"

    @model_validator(mode="after")
    def _one_source(self) -> SplitSpec:
        if (self.path is None) == (self.hub_id is None):
            raise ValueError("set exactly one of 'path' (a local file) and 'hub_id'")
        if self.hub_id is not None:
            if not self.hub_split:
                raise ValueError(f"'hub_split' is required with hub_id {self.hub_id!r}")
            return self
        if self.format is None and self.path.suffix.lstrip(".").lower() not in DATA_FORMATS:
            raise ValueError(
                f"cannot tell the format of {self.path.name}: set 'format' to one of "
                f"{', '.join(DATA_FORMATS)}"
            )
        if (not self.header or self.column_names) and self.resolved_format not in ("csv", "tsv"):
            raise ValueError("'header' and 'column_names' apply to csv and tsv files only")
        if self.column_names and self.header:
            raise ValueError(
                "'column_names' names the columns of a file without header: set header: false"
            )
        return self

    @property
    def resolved_format(self) -> str:
        if self.hub_id is not None:
            return "hub"
        return self.format or self.path.suffix.lstrip(".").lower()

    @property
    def source(self) -> str:
        """How messages name this split's data: the file name or hub_id[split]."""
        return f"{self.hub_id}[{self.hub_split}]" if self.hub_id else self.path.name


CheckSeverity = Literal["fail", "warn", "off"]
# Phone numbers written without "+country" are read in these regions (ISO 3166): the largest
# English-speaking markets and the EU's biggest, so a UK or German data set is not silently
# read as American. Each region costs one matcher pass over the rows that hold digits.
PHONE_REGIONS = ("US", "GB", "CA", "AU", "IN", "IE", "DE", "FR", "ES", "IT", "NL")
PII_KINDS = ("email", "phone", "credit_card", "iban", "ip_address", "secret")


class TextNormalization(Spec):
    """Rewrites applied to every text before the checks, training and the fingerprint."""

    unicode_form: Literal["NFC", "NFKC"] | None = Field(
        None, description="Unicode normal form applied to every text (None: as written)."
    )
    lowercase: bool = Field(False, description="Lower-case every text.")
    collapse_whitespace: bool = Field(
        False, description="Replace every run of whitespace (tabs, newlines) by one space."
    )


class DataChecksSpec(Spec):
    """Severity (fail / warn / off) and threshold of each data check; see docs/data-validation.md."""

    column_types: CheckSeverity = Field(
        "fail",
        description="schema: a mapped column of the wrong type (warn: cast and go on). Missing "
        "columns always fail: nothing can be prepared without them.",
    )
    empty_text: CheckSeverity = Field("fail", description="Empty or whitespace-only texts.")
    labels: CheckSeverity = Field(
        "fail", description="Labels that are no class name or id (warn/off: those rows dropped)."
    )
    label_set: CheckSeverity = Field(
        "warn", description="Train and eval hold the same classes, every configured one."
    )
    class_balance: CheckSeverity = Field(
        "warn", description="The rarest class of a split is below min_class_share."
    )
    min_class_share: float = Field(
        0.05, ge=0, le=1, description="class_balance: smallest share allowed for a class."
    )
    duplicates: CheckSeverity = Field(
        "warn", description="Rows repeating an earlier row's text and label exactly."
    )
    normalized_duplicates: CheckSeverity = Field(
        "warn",
        description="Rows repeating an earlier row's text and label once case, Unicode form, "
        "punctuation and spacing are ignored (exact repeats not counted again).",
    )
    max_duplicate_share: float = Field(
        0.0, ge=0, le=1, description="Share of a split's rows allowed to be duplicates."
    )
    conflicting_labels: CheckSeverity = Field(
        "warn", description="The same (normalised) text with different labels in one split."
    )
    leakage: CheckSeverity = Field("fail", description="Eval texts found verbatim in train.")
    normalized_leakage: CheckSeverity = Field(
        "warn", description="Eval texts matching a train text only after normalisation."
    )
    max_leakage_share: float = Field(
        0.0, ge=0, le=1, description="Share of eval rows allowed to overlap train."
    )
    token_lengths: CheckSeverity = Field(
        "warn",
        description="Share of texts longer than train.max_length tokens (the model's tokenizer).",
    )
    max_truncated_share: float = Field(
        0.01, ge=0, le=1, description="token_lengths: share of texts allowed to be truncated."
    )
    response_truncation: CheckSeverity = Field(
        "fail",
        description="Generative data: share of conversations whose rendered tokens exceed "
        "train.max_length, so the response would be cut (above max_truncated_share); rows whose "
        "prompt alone is too long are listed.",
    )
    report_lengths: tuple[int, ...] = Field(
        (64, 128, 256, 512),
        description="token_lengths: also report the share truncated at each of these lengths.",
    )


class PiiSpec(Spec):
    """What personal data or secrets are looked for in the texts and what happens on a find."""

    policy: Literal["fail", "redact", "warn", "off"] = Field(
        "fail",
        description="fail: stop the run; redact: replace each find by [KIND] in the prepared "
        "data (recorded in the report); warn: report only; off: do not look.",
    )
    kinds: tuple[Literal[PII_KINDS], ...] = Field(  # type: ignore[valid-type]
        PII_KINDS, description="What to look for."
    )
    phone_regions: tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...] = Field(
        PHONE_REGIONS,
        min_length=1,
        description="Regions (ISO 3166 codes) in which phone numbers written without "
        "+country code are read; a number valid in any of them is found. Numbers written with "
        "+country code are found whatever the list. Rows with phone-like numbers no region "
        "confirms are reported (add their region). Replaces the older single `phone_region`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _single_region(cls, data):
        """``phone_region: GB`` (one region, the older key) still reads as ``[GB]``."""
        if isinstance(data, dict) and "phone_region" in data:
            data = dict(data)
            region = data.pop("phone_region")
            data.setdefault("phone_regions", [region] if isinstance(region, str) else region)
        return data


class SplitFraction(Spec):
    """Split one file into train and eval (``data.split``) instead of naming an eval file."""

    eval_fraction: float = Field(
        0.2, gt=0, lt=1, description="Share of the rows that go to the eval split."
    )
    seed: int = Field(0, description="Seed of the split: the same seed gives the same split.")
    stratify: bool = Field(True, description="Keep each class's share the same in train and eval.")


class DataSpec(Spec):
    name: str = Field(description="Dataset name recorded in lineage (e.g. 'sst2').")
    license: str | None = Field(
        None, description="License the local data is published under (recorded in the audit)."
    )
    labels: tuple[str, ...] = Field(
        (),
        description="Classification: class names in id order (at least two); integer labels in "
        "the files index this list. Generative data has none.",
    )
    system_prompt: str | None = Field(
        None,
        description="Generative: system prompt put before every conversation that has none "
        "(recorded in the data fingerprint; served with the model).",
    )
    train: SplitSpec = Field(
        description="Training split and its column mapping (with `split`: the one file that "
        "holds both splits)."
    )
    eval: SplitSpec | None = Field(
        None, description="Evaluation split and its column mapping; or set `split` instead."
    )
    split: SplitFraction | None = Field(
        None,
        description="Split the train file into train and eval: a seeded fraction, stratified by "
        "class; rows that repeat a text exactly or once normalised (case, punctuation, spacing) "
        "all go to the same side, so they cannot leak. Set this or `eval`, not both.",
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="Raw label -> class name, applied before labels are matched: e.g. "
        "{ham: legit, spam: spam} or {'0': negative}. Raw labels not listed are matched as "
        "class names or ids as usual.",
    )
    dedupe: Literal["off", "exact", "normalized"] = Field(
        "off",
        description="Drop rows repeating an earlier row's text and label within a split: "
        "'exact' (same text), 'normalized' (same once case, Unicode form, punctuation and "
        "spacing are ignored; exact repeats too); counted in the report (check 'dedupe').",
    )
    seed: int = Field(0, description="Seed of the subset sampling (max_samples).")
    normalize: TextNormalization = Field(
        default_factory=TextNormalization,
        description="Text normalisation (texts are always stripped of surrounding spaces).",
    )
    checks: DataChecksSpec = Field(
        default_factory=DataChecksSpec, description="Data checks: severities and thresholds."
    )
    pii: PiiSpec = Field(default_factory=PiiSpec, description="PII and secrets policy.")

    @field_validator("labels")
    @classmethod
    def _unique(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(labels)) != len(labels):
            raise ValueError("class names must be unique")
        return labels

    @field_validator("label_map", mode="before")
    @classmethod
    def _keys_as_text(cls, mapping):
        """YAML reads ``0: negative`` with an int key; raw labels are matched as text."""
        if isinstance(mapping, dict):
            return {str(k): v for k, v in mapping.items()}
        return mapping

    @property
    def kind(self) -> Literal["classification", "generative"]:
        """classification (text + label) or generative (prompt/response or chat messages)."""
        return self.train.shape

    @model_validator(mode="after")
    def _shape(self) -> DataSpec:
        if self.eval is not None and self.eval.shape != self.train.shape:
            raise ValueError(
                f"train is {self.train.shape} data, eval is {self.eval.shape}: map both the same way"
            )
        if self.kind == "classification" and len(self.labels) < 2:
            raise ValueError("classification data needs at least two class names in 'labels'")
        if self.kind == "generative" and (self.labels or self.label_map):
            raise ValueError("'labels'/'label_map' apply to classification data, not generative")
        if self.kind == "classification" and self.system_prompt is not None:
            raise ValueError("'system_prompt' applies to generative data")
        return self

    @model_validator(mode="after")
    def _sources(self) -> DataSpec:
        if (self.eval is None) == (self.split is None):
            raise ValueError(
                "set exactly one of 'eval' (a file) and 'split' (a fraction of the train file)"
            )
        unknown = sorted({v for v in self.label_map.values() if v not in self.labels})
        if unknown:
            raise ValueError(
                f"label_map maps to {unknown}, which are not classes; allowed: "
                f"{', '.join(self.labels)}"
            )
        return self

    @property
    def splits(self) -> dict[str, SplitSpec]:
        """The source of each split; with ``split`` both come from the train file."""
        return {"train": self.train, "eval": self.eval or self.train}
