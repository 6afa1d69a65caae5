"""A generated block inside a hand-written document: the text between <!-- <name>_summary -->
and <!-- /<name>_summary --> is a report's, rewritten whole each time, never a hand copy."""
from __future__ import annotations

from pathlib import Path

from ssl_bf.errors import UsageError


def markers(readme: Path, name: str) -> tuple[str, str]:
    """The report's markers in `readme`; a usage error unless it holds exactly one pair."""
    start, end = f"<!-- {name}_summary -->", f"<!-- /{name}_summary -->"
    doc = readme.read_text() if readme.is_file() else ""
    if doc.count(start) != 1 or doc.count(end) != 1 or doc.index(start) > doc.index(end):
        raise UsageError(f"--readme {readme} needs one {start} ... {end} pair to hold the report")
    return start, end


def splice(readme: Path, name: str, text: str) -> None:
    """Put the report between `<!-- <name>_summary -->` and `<!-- /<name>_summary -->` in a
    document, so its tables are the report's and never a hand copy."""
    start, end = markers(readme, name)
    head, rest = readme.read_text().split(start)
    readme.write_text(head + start + "\n" + text.strip("\n") + "\n" + end + rest.split(end, 1)[1])
