"""docs/benchmark.md holds several benchmarks' reports; each rewrites only its own section."""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between ``<!-- name -->`` markers in ``path``, keeping everything else."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{text.rstrip()}\n{end}\n"
    current = path.read_text() if path.exists() else ""
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        path.write_text(before + block + ("\n" + after if after else ""))
    else:
        path.write_text(current.rstrip() + ("\n\n" if current else "") + block)
