"""Fit the packaged voice projection (src/emovox/data/voice_lda.npz).

Embeds windows of up to 40 utterances of every speaker of the developer corpora (each
speaker heard in every emotion they recorded) and fits
:func:`emovox.voice_projection.fit_projection` on them. Deterministic (seed 1).

Usage::

    python tools/build_voice_projection.py [--corpora ../shared/corpora]
                                           [--out src/emovox/data/voice_lda.npz]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("emodb/wav", "ravdess/Audio_Speech_Actors_01-24", "crema-d/AudioWAV")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", type=Path, default=REPO.parent / "shared" / "corpora")
    parser.add_argument("--out", type=Path,
                        default=REPO / "src" / "emovox" / "data" / "voice_lda.npz")
    args = parser.parse_args()
    from emovox.corpora import load_corpus
    from emovox.voice_projection import fit_projection_on_corpora, save_projection

    tables = [load_corpus(args.corpora / s).table for s in SOURCES]
    projection, note = fit_projection_on_corpora(tables, progress=sys.stderr.isatty())
    note += f": {', '.join(SOURCES)}"
    save_projection(projection, args.out, note)
    print(f"{args.out}: {projection.shape}; {note}")


if __name__ == "__main__":
    main()
