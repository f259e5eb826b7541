"""float32 vs int8 ONNX exports of an int8 tier's bundle on a fixed set of speakers' files.

Usage::

    python benchmarks/int8_agreement.py [--model fast|accurate] [--threads 1]
                                        [--corpora ../shared/corpora] [--markdown PATH]

Takes a packaged int8 tier (``fast`` by default, or ``accurate``: the int8 export of
the ``fast-native`` / ``accurate-native`` bundle, MatMul weights, the encoders'
convolutions included, quantised per output channel by ONNX Runtime's dynamic
quantisation) and a float32 export of the same bundle made in a temporary folder, then
predicts the files of a fixed set of speakers of EmoDB (the last two), RAVDESS speech
(actors 21-24) and CREMA-D (the last four actors in the developer subset), each
speaker's files as one batch (the bundle adapts to the speaker), with both exports.
Prints per corpus: label agreement, the largest probability difference, the UAR of each
against the corpus labels (the bundle's six classes), and the int8 / float32
prediction time.

Protocol: the tier's bundle, training speakers included: agreement check only. The
shipped bundles were trained on every speaker of these corpora, so the UARs are not
accuracy estimates; they show whether int8 moves the answers, on the same files.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from common import add_corpora_argument, corpora_root, print_table

#: Corpus folder -> how many of its last speakers (sorted) are predicted.
HELD_OUT = {"emodb/wav": 2, "ravdess/Audio_Speech_Actors_01-24": 4, "crema-d/AudioWAV": 4}
PROTOCOL = "{} bundle, training speakers included: agreement check only"


def held_out_files(root: Path, labels: object) -> pd.DataFrame:
    """Files of the held-out speakers with a class of the bundle.

    Returns
    -------
    pandas.DataFrame
        Columns ``corpus``, ``speaker``, ``path`` and ``label``.
    """
    from emovox.corpora import load_corpus

    frames = []
    for folder, count in HELD_OUT.items():
        table = load_corpus(root / folder).table
        speakers = sorted(table["speaker"].astype(str).unique())[-count:]
        table = table[table["speaker"].astype(str).isin(speakers)].copy()
        table["label"] = [labels.map_row(e, g)  # type: ignore[attr-defined]
                          for e, g in zip(table["emotion"], table["gender"], strict=True)]
        table["corpus"] = folder.split("/")[0]
        frames.append(table[table["label"].notna()][["corpus", "speaker", "path", "label"]])
    return pd.concat(frames, ignore_index=True)


def predict(recognizer: object, files: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Probabilities of every file (each speaker's files predicted together), seconds."""
    classes = recognizer.classes  # type: ignore[attr-defined]
    out = np.zeros((len(files), len(classes)))
    started = time.perf_counter()
    for _, rows in files.groupby("speaker", sort=False):
        frame = recognizer.predict_files(list(rows["path"]),  # type: ignore[attr-defined]
                                         progress=False)
        out[rows.index.to_numpy()] = frame[classes].to_numpy(float)
    return out, time.perf_counter() - started


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    """Export, predict and print the table.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    list of dict
        One row per corpus and one for all files.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="fast", choices=["fast", "accurate"],
                        help="the packaged int8 tier")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    add_corpora_argument(parser)
    args = parser.parse_args(argv)
    root = corpora_root(args)
    command = "python benchmarks/int8_agreement.py " + " ".join(
        argv if argv is not None else sys.argv[1:])

    from emovox.evaluation import compute_scores
    from emovox.export import export_onnx
    from emovox.inference.packaged import EXPORT_SOURCES, bundles_root, packaged_model
    from emovox.recognizer import OnnxRecognizer

    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        source = bundles_root() / EXPORT_SOURCES[args.model]
        exports = {False: export_onnx(source, Path(tmp) / "f32"),
                   True: packaged_model(args.model)}
        recognizers = {k: OnnxRecognizer(v, threads=args.threads) for k, v in exports.items()}
        classes = recognizers[False].classes
        files = held_out_files(root, recognizers[False].labels)
        full, full_seconds = predict(recognizers[False], files)
        quantised, int8_seconds = predict(recognizers[True], files)
    rows = []
    groups = [*files.groupby("corpus", sort=False), ("all", files)]
    for corpus, part in groups:
        index = part.index.to_numpy()
        a, b = full[index].argmax(axis=1), quantised[index].argmax(axis=1)
        truth = part["label"].to_numpy()
        rows.append({
            "corpus": corpus, "files": len(part),
            "speakers": part["speaker"].nunique(),
            "label agreement": float(np.mean(a == b)),
            "max |dp|": float(np.abs(full[index] - quantised[index]).max()),
            "UAR float32": compute_scores(truth, np.asarray(classes)[a], classes)["uar"],
            "UAR int8": compute_scores(truth, np.asarray(classes)[b], classes)["uar"],
        })
    protocol = PROTOCOL.format(args.model)
    lines = [f"`{command.strip()}`", "", f"Protocol: {protocol}. int8 / float32 prediction "
             f"time: {int8_seconds / full_seconds:.2f} ({int8_seconds:.1f} s / "
             f"{full_seconds:.1f} s, {args.threads} thread(s)).", "",
             "| corpus | files (speakers) | label agreement | max abs dp | UAR float32 | "
             "UAR int8 |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['corpus']} | {r['files']} ({r['speakers']}) | {r['label agreement']:.3f} "
              f"| {r['max |dp|']:.3f} | {r['UAR float32']:.3f} | {r['UAR int8']:.3f} |"
              for r in rows]
    print_table("\n".join(lines), args.markdown)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
