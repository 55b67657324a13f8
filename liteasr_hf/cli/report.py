"""Render every results table in README.md and docs/*.md from the JSON reports under docs/results/.

    liteasr report            # rewrite the tables between <!-- table: NAME --> and <!-- /table -->
    liteasr report --check    # exit 1, naming each table, when a committed table differs from its reports

docs/results/tables.json says which reports each table shows; a figure in a table is never typed by hand.
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
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a rendered table differs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        rendered = render_documents(args.root)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    stale = [(doc.path, name) for doc in rendered for name in doc.changed]
    root = Path(args.root)
    if args.check:
        for path, name in stale:
            print(f"{path.relative_to(root)}: table {name!r} differs from its reports (run liteasr report)",
                  file=sys.stderr)
        tables = sum(len(doc.changed) for doc in rendered)
        if not stale:
            print(f"{len(rendered)} documents: every table matches its reports.")
        return 1 if tables else 0
    for doc in rendered:
        if doc.rendered != doc.committed:
            atomic_write_text(doc.path, doc.rendered)
            print(f"rewrote {doc.path.relative_to(root)}: {', '.join(doc.changed)}")
    if not stale:
        print(f"{len(rendered)} documents: every table already matches its reports.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
