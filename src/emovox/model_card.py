"""The human-readable model card written into every bundle."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from emovox.evaluation import SCORE_NAMES, SCORES

#: Licenses of the corpora emovox knows, for model cards.
CORPUS_LICENSES = {
    "emodb": "EmoDB: free for research; redistributed as CC0 1.0 by its curators",
    "ravdess": "RAVDESS: CC BY-NC-SA 4.0 (non-commercial)",
    "crema-d": "CREMA-D: Open Database License 1.0 / Database Contents License 1.0",
    "tess": "TESS: CC BY-NC-ND 4.0",
    "savee": "SAVEE: free for research use",
}


def render_card(name: str, description: str, classes: list[str], features: Mapping[str, Any],
                model: Mapping[str, Any], table: pd.DataFrame,
                evaluation: Mapping[str, Any] | None, normalization: str = "none",
                calibrated: bool = False) -> str:
    """Markdown model card: data and licenses, labels, protocol and scores, limits."""
    counts = table.groupby("corpus").agg(utterances=("path", "size"),
                                         speakers=("speaker", "nunique"))
    lines = [f"# Model card: {name}", "", description or "", "",
             "## Model", "",
             f"- features: `{dict(features)}`",
             f"- classifier: `{dict(model)}` behind a StandardScaler fitted on training data",
             f"- classes ({len(classes)}): {', '.join(classes)}", "",
             "## Training data", "",
             "| corpus | utterances | speakers | license |", "|---|---|---|---|"]
    for corpus, row in counts.iterrows():
        lines.append(f"| {corpus} | {row.utterances} | {row.speakers} | "
                     f"{CORPUS_LICENSES.get(str(corpus), 'see the corpus distribution')} |")
    lines += ["", "## Evaluation", ""]
    if evaluation:
        lines.append(f"Protocol: {evaluation['protocol']}.")
        lines.append("")
        lines.append("| score | mean ± std over folds |")
        lines.append("|---|---|")
        for score in SCORES:
            lines.append(f"| {SCORE_NAMES[score]} | {evaluation['mean'][score]:.3f} ± "
                         f"{evaluation['std'][score]:.3f} |")
    else:
        lines.append("Not evaluated when this bundle was built.")
    if normalization == "speaker":
        lines += ["", "## Adaptation to the speaker", "",
                  "Features are standardised per speaker (statistics shrunk towards the "
                  "average training speaker). At inference the statistics come from the "
                  "files predicted together (`--adapt batch`, the default for files and "
                  "folders), the running statistics of a timeline or live stream "
                  "(`--adapt stream`), or a calibration recording (`--calibrate FILE`); "
                  "`--adapt none` uses the average training speaker. Files predicted "
                  "together are treated as one speaker and channel: mix speakers in a "
                  "batch and the adaptation becomes per-batch."]
    if calibrated:
        lines += ["", "## Confidence", "",
                  "Probabilities are temperature-scaled on out-of-fold predictions over "
                  "the training speakers, so a confidence of 0.7 means about 70 % right "
                  "on voices the model never heard. Set `model.uncertain_below` in the "
                  "recipe to answer \"uncertain\" below a threshold."]
    lines += [
        "", "## Known limits", "",
        "- Trained on acted emotional speech; spontaneous speech is subtler and will score "
        "lower.",
        "- Languages of the training data only (English and German for the default model); "
        "adult speakers.",
        "- Recording conditions differ between corpora and users' microphones; accuracy on an "
        "unseen corpus is much lower than within a corpus.",
        "- One label per file: long recordings need a timeline of windows.",
        "- Check the training corpora's licenses before any commercial use.", ""]
    return "\n".join(lines)
