"""What happens to a text before the model sees it, in training, evaluation and serving alike.

The data stage strips every text, applies ``data.normalize`` and, under ``data.pii.policy:
redact``, replaces each find by ``[KIND]``; a model trained on that text has never seen a raw
phone number. ``Preprocessing`` records those steps with their settings (the same detector,
kinds and phone regions) so the registered model can apply them to what it is asked, and
``apply`` is the one function that does it: the data stage builds its prepared texts from
the same two steps (``normalize_texts`` and ``pii.scan(...).redacted``), evaluation and the
MLflow pyfunc call ``apply``. It is idempotent (placeholders survive lower-casing and hold no
digits), so already prepared texts, such as the eval split or replayed canary examples, pass
through unchanged.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from tasks.core.config.data import PHONE_REGIONS
from tasks.core.data.pii import PLACEHOLDER, scan

FORMAT_VERSION = 1
# Placeholders the redaction writes, restored to upper case after lower-casing so a prepared
# text reads the same when it is prepared again.
_PLACEHOLDERS = re.compile(
    "|".join(re.escape(p) for p in PLACEHOLDER.values()), flags=re.IGNORECASE
)


def normalize_texts(
    values: pd.Series,
    unicode_form: str | None = None,
    lowercase: bool = False,
    collapse_whitespace: bool = False,
) -> pd.Series:
    """Texts as trained on: None -> '', stripped, then the configured rewrites."""
    texts = values.astype(object).where(values.notna(), "").astype(str)
    if unicode_form:
        texts = texts.map(lambda t: unicodedata.normalize(unicode_form, t))
    if collapse_whitespace:
        texts = texts.str.replace(r"\s+", " ", regex=True)
    if lowercase:
        texts = texts.str.lower().str.replace(
            _PLACEHOLDERS, lambda m: m.group(0).upper(), regex=True
        )
    return texts.str.strip()


@dataclass(frozen=True)
class Preprocessing:
    """The text rewrites a model was trained with; recorded with the model as JSON."""

    unicode_form: str | None = None
    lowercase: bool = False
    collapse_whitespace: bool = False
    redact: tuple[str, ...] = ()  # PII kinds replaced by [KIND]; empty: nothing redacted
    phone_regions: tuple[str, ...] = field(default=PHONE_REGIONS)
    version: int = FORMAT_VERSION

    @classmethod
    def from_spec(cls, spec) -> Preprocessing:
        """From a ``DataSpec``: normalisation always; redaction only under policy ``redact``."""
        norm, pii = spec.normalize, spec.pii
        return cls(
            unicode_form=norm.unicode_form,
            lowercase=norm.lowercase,
            collapse_whitespace=norm.collapse_whitespace,
            redact=tuple(pii.kinds) if pii.policy == "redact" else (),
            phone_regions=tuple(pii.phone_regions),
        )

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        if int(data.get("version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise ValueError(f"preprocessing format {data['version']} is newer than this code")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("redact", "phone_regions"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)

    @classmethod
    def read(cls, path: str | Path) -> Preprocessing:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | Path) -> Path:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    def normalized(self, texts: pd.Series) -> pd.Series:
        return normalize_texts(texts, self.unicode_form, self.lowercase, self.collapse_whitespace)

    def apply(self, texts: list[str]) -> list[str]:
        """The texts as the model was trained to read them."""
        series = self.normalized(pd.Series(list(texts), dtype=object))
        if self.redact:
            series = scan(series, self.redact, self.phone_regions).redacted(series)
        return series.tolist()

    def describe(self) -> str:
        """One line for docs, cards and logs."""
        steps = ["strip"]
        if self.unicode_form:
            steps.append(self.unicode_form)
        if self.collapse_whitespace:
            steps.append("collapse whitespace")
        if self.lowercase:
            steps.append("lower-case")
        if self.redact:
            regions = ", ".join(self.phone_regions)
            steps.append(f"redact {', '.join(self.redact)} (phone regions {regions})")
        return "; ".join(steps)
