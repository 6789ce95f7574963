"""Where a benchmark script writes its figures in docs/benchmarks.md (``--write-docs``).

A script owns the lead of its ``## `` section: the text between the heading and the first
``### `` subsection. The subsections are the section's history (runs on other machines, what
each change bought), written by hand; a new run replaces the lead and keeps them.
"""

from __future__ import annotations

from pathlib import Path


def replace_lead(doc: str, head: str, text: str) -> str:
    """``doc`` with the lead of section ``head`` (``## Name``) replaced by ``text``; the
    section's ``### `` subsections and every other section stay. A missing section is added."""
    start = doc.find(f"\n{head}\n")
    if start < 0:
        return doc.rstrip("\n") + f"\n\n{head}\n\n{text.strip()}\n"
    start += 1
    body = start + len(head)
    ends = [doc.find(mark, body) for mark in ("\n### ", "\n## ")]
    end = min((e for e in ends if e >= 0), default=-1)
    rest = doc[end:] if end >= 0 else ""
    return doc[:start] + f"{head}\n\n{text.strip()}\n" + rest


def write_lead(path: Path, head: str, text: str) -> None:
    """``replace_lead`` on the file at ``path`` (created with a title when missing)."""
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    path.write_text(replace_lead(doc, head, text))
