"""Command-line plumbing the benchmark scripts share: where the corpora are, the table out.

The scripts run as ``python benchmarks/<name>.py``, so this folder is on ``sys.path``
and ``from common import ...`` finds this module.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_corpora_argument(parser: argparse.ArgumentParser) -> None:
    """``--corpora``: the developer corpora folder ($EMOVOX_CORPORA or ../shared/corpora)."""
    parser.add_argument("--corpora", type=Path,
                        default=Path(os.environ.get("EMOVOX_CORPORA", "../shared/corpora")))


def corpora_root(args: argparse.Namespace) -> Path:
    """The resolved ``--corpora`` folder; exits with a one-line error when it is missing.

    Also sets ``$EMOVOX_CORPORA`` to it (if unset), which recipes use in their paths.
    """
    if not args.corpora.is_dir():
        sys.exit(f"corpora not found at {args.corpora}: pass --corpora or set EMOVOX_CORPORA")
    root = args.corpora.resolve()
    os.environ.setdefault("EMOVOX_CORPORA", str(root))
    return root


def print_table(table: str, markdown: Path | None) -> None:
    """Print a Markdown table, and write it to ``markdown`` when given."""
    print()
    print(table)
    if markdown:
        markdown.write_text(table + "\n")
