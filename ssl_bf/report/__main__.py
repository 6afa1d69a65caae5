"""`python -m ssl_bf.report RUN_DIR [RUN_DIR ...] [--no-embedding] [--embedding-points N]`."""
from __future__ import annotations

import sys
from pathlib import Path

from ssl_bf.errors import UsageError, exit_on_usage_error
from ssl_bf.report.curves import plot_curves
from ssl_bf.report.per_class import plot_per_class
from ssl_bf.report.runs import final_row, read_run, table

USAGE = ("usage: python -m ssl_bf.report RUN_DIR [RUN_DIR ...] [--no-embedding] "
         "[--embedding-points N]")
POINTS = 5000  # test images in the t-SNE picture (report/embedding.py: its cost)


def parse_args(args: list[str]) -> tuple[list[str], int | None]:
    """(run directories, t-SNE points or None for no embedding)."""
    dirs, points, rest = [], POINTS, list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--no-embedding":
            points = None
        elif arg.startswith("--embedding-points"):
            value = arg.partition("=")[2] or (rest.pop(0) if rest else "")
            if not value.isdigit() or int(value) < 10:
                raise UsageError("--embedding-points: expected an integer of at least 10, "
                                 f"got '{value}'")
            points = int(value)
        elif arg.startswith("-"):
            raise UsageError(f"unknown option '{arg}' ({USAGE})")
        else:
            dirs.append(arg)
    if not dirs:
        raise UsageError(USAGE)
    return dirs, points


@exit_on_usage_error
def main(argv: list[str] | None = None) -> int:
    dirs, points = parse_args(sys.argv[1:] if argv is None else argv)
    runs = [read_run(Path(a)) for a in dirs]
    if len({r["name"] for r in runs}) < len(runs):  # e.g. several .../seed0: add the parent
        for r in runs:
            r["name"] = f"{r['dir'].resolve().parent.name}/{r['name']}"
    out = runs[0]["dir"]
    plot_curves(runs, out / "report_curves.png")
    written = [out / "report_curves.png"]
    if plot_per_class(runs, out / "report_per_class.png"):
        written.append(out / "report_per_class.png")
    if points is not None:
        from ssl_bf.report.embedding import plot_embedding

        plot_embedding(runs, out / "report_embedding.png", points)
        written.append(out / "report_embedding.png")
    text = table([final_row(r) for r in runs])
    (out / "report.md").write_text(text)
    print(text, end="")
    print(f"wrote {', '.join(map(str, written))} and {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
