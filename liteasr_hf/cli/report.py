"""Render every results table and every figure quoted in README.md and docs/*.md from the JSON reports under
docs/results/.

    liteasr report            # rewrite the tables between <!-- table: NAME --> and <!-- /table -->, and the figures
                              # between <!-- figure: FORMULA | FORMAT --> and <!-- /figure -->
    liteasr report --check    # exit 1, naming each table and figure, when committed text differs from its reports

docs/results/tables.json says which reports each table shows; a figure in prose is a formula over those tables' cells
and the reports' values (liteasr_hf/evaluation/results_figures.py). No figure is typed by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..atomic import atomic_write_text
from ..evaluation.results_tables import render_documents


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="liteasr report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=".", help="the repository root: README.md, docs/ and docs/results/ (default: .)")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a rendered table or figure differs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rendered = render_documents(args.root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = [(doc.path, f"table {name!r}") for doc in rendered for name in doc.changed]
    stale += [(doc.path, f"figure {formula!r}") for doc in rendered for formula in doc.changed_figures]
    root = Path(args.root)
    if args.check:
        for path, what in stale:
            print(f"{path.relative_to(root)}: {what} differs from its reports (run liteasr report)", file=sys.stderr)
        if not stale:
            print(f"{len(rendered)} documents: every table and figure matches its reports.")
        return 1 if stale else 0
    for doc in rendered:
        if doc.rendered != doc.committed:
            atomic_write_text(doc.path, doc.rendered)
            what = doc.changed + ([f"{len(doc.changed_figures)} figure(s)"] if doc.changed_figures else [])
            print(f"rewrote {doc.path.relative_to(root)}: {', '.join(what)}")
    if not stale:
        print(f"{len(rendered)} documents: every table and figure already matches its reports.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
