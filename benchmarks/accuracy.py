"""Speaker-independent accuracy of the classical baselines on the developer corpora.

Prints, for eGeMAPS + SVM, ComParE + logistic regression and the 180-value MFCC/
chroma/mel MLP, UAR / WA / macro-F1 (mean ± std over folds) on

- EmoDB, 7 classes, leave-one-speaker-out (10 folds),
- RAVDESS speech, 8 classes, 6 actor folds (actors 1-4, 5-8, ..., 21-24),
- CREMA-D (actors 1001-1020), 6 classes, 5 speaker folds,

and the MLP once more on a random 75/25 utterance split of RAVDESS (LEAKY: the same
actors in train and test), to show how much that inflates the score.

``--loco`` prints the cross-corpus table instead: leave-one-corpus-out over every
domain found (EmoDB, RAVDESS speech, RAVDESS song, CREMA-D; TESS and SAVEE when
present) on the 6 shared classes: raw, with each adaptation (per-corpus / per-speaker
statistics, loudness normalisation, silence trimming), with each training choice
(corpus balance, channel augmentation, encoder layers, fusion with ComParE, mean and
standard deviation pooling, late fusion of models' probabilities, a group-robust
objective) and with Whisper base. When RAVDESS song is tested, RAVDESS speech (the
same actors) is left out of training, and vice versa.

Usage::

    python benchmarks/accuracy.py [--corpora ../shared/corpora] [--markdown out.md]
    python benchmarks/accuracy.py --loco [--only base]
    python benchmarks/accuracy.py --loco --distil [--only "per-speaker norm"]
    python benchmarks/accuracy.py --pick-states

``--distil`` runs only the rows of the student distilled from the accurate tier
(:func:`distilled_experiment`) and, in the same run, the default and accurate tiers'.

``--pick-states`` scores every encoder state alone in-corpus (never on a leave-one-
corpus-out test corpus) and prints the states :func:`pick_states` keeps (issue 13).

Features are cached (``$EMOVOX_CACHE`` or ~/.cache/emovox), so a rerun takes seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from common import add_corpora_argument, corpora_root, print_table
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.utils.class_weight import compute_class_weight

from emovox.config import ExperimentConfig, load_config
from emovox.evaluation import (
    SCORES,
    FoldResult,
    mean_std,
    per_class_table,
    pooled_confusion,
    summarise,
)
from emovox.experiment import (
    Dataset,
    RunResult,
    balance_weights,
    fit_model,
    normalised_features,
    prepare_dataset,
    protocol_description,
    run_experiment,
    training_rows,
)
from emovox.models import make_classifier
from emovox.protocols import make_splits

BENCHMARKS = {
    "EmoDB 7-class LOSO": {
        "corpora": ["{root}/emodb/wav"], "labels": "emodb7", "protocol": {"kind": "loso"}},
    "RAVDESS speech 8-class, 6 actor folds": {
        "corpora": ["{root}/ravdess/Audio_Speech_Actors_01-24"], "labels": "ravdess8",
        "protocol": {"kind": "speaker_folds", "n_folds": 6}},
    "CREMA-D (20 actors) 6-class, 5 speaker folds": {
        "corpora": ["{root}/crema-d/AudioWAV"], "labels": "common6",
        "protocol": {"kind": "speaker_folds", "n_folds": 5}},
}
WHISPER_TINY = {"name": "whisper_encoder", "layers": "all", "pooling": "mean"}
WHISPER_BASE = {**WHISPER_TINY, "model": "base"}
LOUDNESS = {"name": "preprocessed", "features": WHISPER_TINY, "loudness_lufs": -23.0}
TRIMMED = {"name": "preprocessed", "features": WHISPER_TINY, "trim_top_db": 30.0}
LOUDNESS_BASE = {**LOUDNESS, "features": WHISPER_BASE}
#: Whisper tiny.en and base states concatenated (1,920 + 3,584 values), each cached alone.
TINY_BASE = {"name": "fused", "parts": [LOUDNESS, LOUDNESS_BASE]}
#: The same without the two embedding outputs (state 0 of each encoder): tiny states 1-4
#: and base states 1-6 (1,536 + 3,072 values); the subset picked on training speakers
#: only (nested, issue 13) among five candidates, including tiny 1-3 + base 2-4.
TINY_BASE_NO_EMBEDDINGS = {"name": "fused", "parts": [
    {**LOUDNESS, "features": {**WHISPER_TINY, "layers": [1, 2, 3, 4]}},
    {**LOUDNESS_BASE, "features": {**WHISPER_BASE, "layers": [1, 2, 3, 4, 5, 6]}}]}
#: The middle states only, tiny 1-3 + base 2-4 (1,152 + 1,536 values): the shipped
#: accurate tier since issue 13's second round (recipes/accurate_bundle.yaml); the
#: encoders stop after tiny's block 3 and base's block 4.
TINY_BASE_MIDDLE = {"name": "fused", "parts": [
    {**LOUDNESS, "features": {**WHISPER_TINY, "layers": [1, 2, 3]}},
    {**LOUDNESS_BASE, "features": {**WHISPER_BASE, "layers": [2, 3, 4]}}]}


def with_states(part: dict, layers: list[int]) -> dict:
    """A (preprocessed) encoder spec like ``part`` keeping only the hidden states
    ``layers``; cached features of all its states serve it (their columns)."""
    return {**part, "features": {**part["features"], "layers": layers}}


def tiny_base_states(tiny: list[int], base: list[int]) -> dict:
    """Whisper tiny.en's states ``tiny`` and base's states ``base`` side by side
    (loudness -23 LUFS)."""
    return {"name": "fused", "parts": [with_states(LOUDNESS, tiny),
                                       with_states(LOUDNESS_BASE, base)]}


def with_pooling(part: dict, pooling: str) -> dict:
    """A (preprocessed) encoder spec like ``part`` pooling its states over frames by
    ``pooling`` ("mean_std": each state's mean, then its standard deviation; twice the
    values). A cache key of its own: mean-pooled entries do not serve it."""
    return {**part, "features": {**part["features"], "pooling": pooling}}


#: Tiny 2-3 + base 2-3 (768 + 1,024 values): the states ``--pick-states`` keeps on the
#: in-corpus folds of all three corpora (:func:`pick_states`, issue 13's third round).
TINY_BASE_PICKED = tiny_base_states([2, 3], [2, 3])
#: The states ``--pick-states`` keeps on the in-corpus folds of each leave-one-corpus-out
#: fold's training corpora only ("kept on the training corpora of LOCO test ...").
TINY_BASE_PICKED_PER_FOLD = {
    "crema-d": tiny_base_states([2, 3], [2, 3]), "emodb": tiny_base_states([2, 3], [3, 4]),
    "ravdess-song": tiny_base_states([2], [2, 3]),
    "ravdess-speech": tiny_base_states([2], [2, 3])}
#: The fast tier (recipes/fast_bundle.yaml): tiny's states 0-2 (3 x 384 values), the
#: encoder stops after block 2 of 4.
FAST_TIER = {**LOUDNESS, "features": {**WHISPER_TINY, "layers": [0, 1, 2]}}
TIER_LR = {"name": "logreg", "params": {"C": 0.01}, "balance": "corpus"}
CHANNEL_COPY = {"recipe": "channel", "copies": 1}


def tier_rows(name: str, features: dict, adapted: str = "adapted",
              lone: str = "a lone file", copies: int = 1) -> dict[str, dict]:
    """A tier recipe's two models as rows (C fixed at 0.01, corpus-balanced, ``copies``
    channel copies per training file, none when 0): standardised per speaker (``f"{name},
    {adapted}"``) and unnormalised, the model a lone file gets (``f"{name}, {lone}"``)."""
    augment = {"augment": {**CHANNEL_COPY, "copies": copies}} if copies else {}
    return {f"{name}, {adapted}": {"features": features, "model": TIER_LR,
                                   "normalization": "speaker", **augment},
            f"{name}, {lone}": {"features": features, "model": TIER_LR, **augment}}


def loco_tier_rows(name: str, features: dict, copies: int = 1) -> dict[str, dict]:
    """:func:`tier_rows` under the leave-one-corpus-out row names."""
    augment = " + channel augmentation" + (f" x{copies}" if copies != 1 else "")
    augment = augment if copies else ""
    return tier_rows(name, features, f"per-speaker norm{augment}",
                     f"corpus-balanced{augment}", copies)


#: The accurate tier's two encoders: spec with every state, and how many states.
ENCODER_STATES = {"tiny": (LOUDNESS, 5), "base": (LOUDNESS_BASE, 7)}
#: The rule of :func:`pick_states`, fixed before any state was scored: keep an encoder's
#: states scoring within this of its best state (about the standard error of a mean
#: in-corpus UAR over the folds: RAVDESS 0.049 / sqrt(6), EmoDB 0.029 / sqrt(10)).
STATE_MARGIN = 0.02
#: In-corpus benchmarks whose corpus a leave-one-corpus-out fold trains on, by test
#: domain (RAVDESS speech and song share their actors: neither trains the other's fold).
LOCO_TRAINING_BENCHMARKS = {
    "crema-d": ["EmoDB 7-class LOSO", "RAVDESS speech 8-class, 6 actor folds"],
    "emodb": ["RAVDESS speech 8-class, 6 actor folds",
              "CREMA-D (20 actors) 6-class, 5 speaker folds"],
    "ravdess-song": ["EmoDB 7-class LOSO", "CREMA-D (20 actors) 6-class, 5 speaker folds"],
    "ravdess-speech": ["EmoDB 7-class LOSO", "CREMA-D (20 actors) 6-class, 5 speaker folds"],
}


def single_state_systems() -> dict[str, dict]:
    """Every state of both encoders alone, the tier recipe without channel copies
    (adapted and a lone file): ``"<encoder> state <k> alone, ..."``."""
    systems = {}
    for encoder, (part, n_states) in ENCODER_STATES.items():
        for state in range(n_states):
            systems.update(tier_rows(f"{encoder} state {state} alone",
                                     with_states(part, [state]), copies=0))
    return systems


def pick_states(rows: list[dict], benchmarks: list[str] | None = None) -> dict[str, list[int]]:
    """The states kept, per encoder, from :func:`run` rows of :func:`single_state_systems`.

    A state's score is its mean UAR over ``benchmarks`` (all when None) and over its two
    models (adapted, a lone file); an encoder keeps every state scoring at least its
    best state's score minus :data:`STATE_MARGIN`. Only in-corpus, speaker-disjoint
    scores enter, so no leave-one-corpus-out test corpus takes part in the choice when
    ``benchmarks`` are the fold's training corpora (:data:`LOCO_TRAINING_BENCHMARKS`).
    """
    picked = {}
    for encoder, (_, n_states) in ENCODER_STATES.items():
        scores = []
        for state in range(n_states):
            mine = [r["uar_mean"] for r in rows
                    if r["system"].startswith(f"{encoder} state {state} alone,")
                    and (benchmarks is None or r["benchmark"] in benchmarks)]
            scores.append(float(np.mean(mine)))
        best = max(scores)
        picked[encoder] = [k for k, score in enumerate(scores) if score >= best - STATE_MARGIN]
    return picked


def state_scores_markdown(rows: list[dict]) -> str:
    """States down, in-corpus benchmarks across (UAR adapted / a lone file), then the
    states :func:`pick_states` keeps on all three and for each LOCO test domain."""
    benches = list(dict.fromkeys(r["benchmark"] for r in rows))
    lines = ["| state | " + " | ".join(benches) + " | score |",
             "|---|" + "---|" * (len(benches) + 1)]
    for encoder, (_, n_states) in ENCODER_STATES.items():
        for state in range(n_states):
            mine = [r for r in rows if r["system"].startswith(f"{encoder} state {state} alone,")]
            cells = []
            for bench in benches:
                pair = [r["uar_mean"] for r in mine if r["benchmark"] == bench]
                cells.append(" / ".join(f"{v:.3f}" for v in pair))
            score = np.mean([r["uar_mean"] for r in mine])
            lines.append(f"| {encoder} {state} | " + " | ".join(cells) + f" | {score:.3f} |")
    lines.append("")
    lines.append(f"kept (within {STATE_MARGIN} of each encoder's best), all three corpora: "
                 f"{pick_states(rows)}")
    for domain, benchmarks in LOCO_TRAINING_BENCHMARKS.items():
        lines.append(f"kept on the training corpora of LOCO test {domain}: "
                     f"{pick_states(rows, benchmarks)}")
    return "\n".join(lines)


SYSTEMS = {
    "eGeMAPS + SVM": {"features": "egemaps", "model": {"name": "svm"}},
    "ComParE + LR": {"features": "compare", "model": {"name": "logreg"}},
    "MFCC/chroma/mel 180 + MLP": {"features": "mfcc_chroma_mel", "model": {"name": "mlp"}},
    # Whisper tiny.en encoder, every hidden state mean-pooled (5 x 384); C is chosen by
    # UAR over folds of the training speakers only (nested), never on the test fold.
    "Whisper-tiny all layers, mean + LR": {
        "features": {"name": "whisper_encoder", "layers": "all", "pooling": "mean"},
        "model": {"name": "logreg", "search": {"C": [0.01, 0.1, 1.0]}}},
    "Whisper-tiny all layers, mean+std + LR": {
        "features": {"name": "whisper_encoder", "layers": "all", "pooling": "mean_std"},
        "model": {"name": "logreg", "search": {"C": [0.01, 0.1, 1.0]}}},
    # Adaptation to the test speaker: each speaker's features standardised with their
    # own (unlabelled) statistics, shrunk towards the average training speaker.
    "Whisper-tiny all layers, mean + LR, per-speaker norm": {
        "features": {"name": "whisper_encoder", "layers": "all", "pooling": "mean"},
        "model": {"name": "logreg", "search": {"C": [0.001, 0.01, 0.1]}},
        "normalization": "speaker"},
    "Whisper-tiny all layers, mean + LR, per-speaker norm, test unadapted": {
        "features": {"name": "whisper_encoder", "layers": "all", "pooling": "mean"},
        "model": {"name": "logreg", "search": {"C": [0.001, 0.01, 0.1]}},
        "normalization": "speaker", "adapt_test": False},
    "Whisper-base all layers, mean + LR": {
        "features": {"name": "whisper_encoder", "model": "base", "layers": "all"},
        "model": {"name": "logreg", "search": {"C": [0.001, 0.01, 0.1]}}},
    "Whisper-base all layers, mean + LR, per-speaker norm": {
        "features": {"name": "whisper_encoder", "model": "base", "layers": "all"},
        "model": {"name": "logreg", "search": {"C": [0.001, 0.01, 0.1]}},
        "normalization": "speaker"},
    # The packaged tiers' recipes (C fixed at 0.01, loudness -23 LUFS, one channel-
    # augmented copy per training file), adapted to each test speaker and a lone file.
    **tier_rows("default tier (tiny)", LOUDNESS),
    **tier_rows("fast tier (tiny states 0-2)", FAST_TIER),
    **tier_rows("accurate tier (tiny + base)", TINY_BASE),
    **tier_rows("accurate tier, tiny 1-3 + base 2-4 states (shipped)", TINY_BASE_MIDDLE),
    **tier_rows("accurate tier, tiny 1-4 + base 1-6 states", TINY_BASE_NO_EMBEDDINGS),
}
LEAKY = ("RAVDESS speech 8-class, 6 actor folds", "MFCC/chroma/mel 180 + MLP",
         {"kind": "random", "allow_leakage": True, "test_fraction": 0.25})


# C fixed a priori (no search: a nested search per fold costs ~30 min per row on 2
# cores); it is never tuned on any test corpus.
LR_FIXED = {"name": "logreg", "params": {"C": 0.01}}
#: Leave-one-corpus-out systems: features, classifier and adaptation. Every adaptation
#: uses unlabelled features only; per-speaker / per-corpus statistics of a *test*
#: group come from that group's own recordings (a batch or folder of them).
def tiny_copy_rows(label: str, recipe: str) -> dict[str, dict]:
    """The default tier's two models (per-speaker norm; corpus-balanced) on Whisper
    tiny.en, each training file with one copy made by the augmentation ``recipe``."""
    spec = {"features": LOUDNESS, "model": {**LR_FIXED, "balance": "corpus"},
            "augment": {"recipe": recipe, "copies": 1}}
    name = "Whisper-tiny + LR, loudness -23 LUFS"
    return {f"{name}, per-speaker norm + {label}": {**spec, "normalization": "speaker"},
            f"{name}, corpus-balanced + {label}": spec}


def tiny_model_rows(label: str, model: dict) -> dict[str, dict]:
    """The default tier's two models (Whisper tiny.en, loudness -23 LUFS, corpus-balanced,
    one channel copy per training file; per-speaker norm, and none for a lone file) with
    the classifier ``model`` in place of the logistic regression."""
    name = f"Whisper-tiny + {label}, loudness -23 LUFS"
    return {system: {**spec, "model": {**model, "balance": "corpus"}} for system, spec in
            loco_tier_rows(name, LOUDNESS).items()}


#: The teacher of the distilled students: the accurate tier's features (its recipe and
#: normalisation are the student's row's), its out-of-fold probabilities from this many
#: speaker-disjoint folds of each leave-one-corpus-out fold's training rows.
DISTIL_TEACHER = {"features": TINY_BASE_MIDDLE, "folds": 5}


def distilled_rows(alpha: float) -> dict[str, dict]:
    """The default tier's two models (:func:`loco_tier_rows` on Whisper tiny.en) fitted to
    ``alpha`` x the accurate tier's out-of-fold probabilities + (1 - ``alpha``) x the
    labels (:func:`distilled_experiment`; temperature 1)."""
    name = (f"Whisper-tiny + LR distilled from tiny 1-3 + base 2-4 (alpha {alpha:g}), "
            "loudness -23 LUFS")
    return {system: {**spec, "teacher": {**DISTIL_TEACHER, "alpha": alpha}}
            for system, spec in loco_tier_rows(name, LOUDNESS).items()}


#: Group-robust objective (issue 13, lone files): logistic regression for its worst
#: training group, softened at 0.1 nats (``group_dro``; C = 0.01 on the LR's scale, so
#: a temperature of None is the default tier's LR exactly). Fixed before any LOCO score.
GROUP_DRO = {"name": "group_dro", "params": {"C": 0.01, "temperature": 0.1}}


LOCO_SYSTEMS = {
    "Whisper-tiny + LR, raw": {"features": WHISPER_TINY, "model": LR_FIXED},
    "Whisper-tiny + LR, corpus-balanced": {
        "features": WHISPER_TINY, "model": {**LR_FIXED, "balance": "corpus"}},
    "Whisper-tiny + LR, per-corpus norm": {
        "features": WHISPER_TINY, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "corpus"},
    "Whisper-tiny + LR, per-speaker norm": {
        "features": WHISPER_TINY, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    # Trained per-speaker normalised, tested on each file alone: test features are
    # standardised by the average training speaker (what --adapt none does).
    "Whisper-tiny + LR, per-speaker norm, test unadapted": {
        "features": WHISPER_TINY, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker", "adapt_test": False},
    # One augmented copy of every training file through a random channel (telephone,
    # codec, reverberation, EQ, noise, resampling); test files are never augmented.
    "Whisper-tiny + LR, per-speaker norm + channel augmentation": {
        "features": WHISPER_TINY, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker", "augment": {"recipe": "channel", "copies": 1}},
    # Preprocessing before the encoder: ITU-R BS.1770 loudness to -23 LUFS, and/or
    # leading/trailing audio quieter than 30 dB below the peak cut off.
    "Whisper-tiny + LR, loudness -23 LUFS, raw": {
        "features": LOUDNESS, "model": LR_FIXED},
    "Whisper-tiny + LR, loudness -23 LUFS, per-speaker norm": {
        "features": LOUDNESS, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    "Whisper-tiny + LR, loudness -23 LUFS, corpus-balanced": {
        "features": LOUDNESS, "model": {**LR_FIXED, "balance": "corpus"}},
    # The default bundle's two models: this one answers a lone file (no adaptation),
    # the next one a speaker with 8+ recordings.
    "Whisper-tiny + LR, loudness -23 LUFS, corpus-balanced + channel augmentation": {
        "features": LOUDNESS, "model": {**LR_FIXED, "balance": "corpus"},
        "augment": {"recipe": "channel", "copies": 1}},
    "Whisper-tiny + LR, loudness -23 LUFS, per-speaker norm + channel augmentation": {
        "features": LOUDNESS, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker", "augment": {"recipe": "channel", "copies": 1}},
    "Whisper-tiny + LR, silence trimmed, raw": {"features": TRIMMED, "model": LR_FIXED},
    "Whisper-tiny + LR, silence trimmed, per-speaker norm": {
        "features": TRIMMED, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    # Encoder layer choice: the last hidden state alone instead of all five.
    "Whisper-tiny last layer + LR, per-speaker norm": {
        "features": {**WHISPER_TINY, "layers": "last"}, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    # Early fusion of hand-crafted ComParE (6373) with the encoder features (1920).
    "ComParE + Whisper-tiny fused + LR, per-speaker norm": {
        "features": {"name": "fused", "parts": ["compare", WHISPER_TINY]},
        "model": {**LR_FIXED, "balance": "corpus"}, "normalization": "speaker"},
    "ComParE + LR, raw": {"features": "compare", "model": LR_FIXED},
    "ComParE + LR, per-speaker norm": {
        "features": "compare", "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    "Whisper-base + LR, raw": {"features": WHISPER_BASE, "model": LR_FIXED},
    "Whisper-base + LR, per-speaker norm": {
        "features": WHISPER_BASE, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    "Whisper-base + LR, loudness -23 LUFS, per-speaker norm": {
        "features": LOUDNESS_BASE,
        "model": {**LR_FIXED, "balance": "corpus"}, "normalization": "speaker"},
    # Issue 13 levers (the accurate tier): both encoders' states side by side.
    "Whisper-tiny + base fused + LR, loudness -23 LUFS, per-speaker norm": {
        "features": TINY_BASE, "model": {**LR_FIXED, "balance": "corpus"},
        "normalization": "speaker"},
    "Whisper-tiny + base fused + LR, loudness -23 LUFS, raw": {
        "features": TINY_BASE, "model": {**LR_FIXED, "balance": "corpus"}},
    # The accurate tier's first recipe (all states), and its lone-file model.
    **loco_tier_rows("Whisper-tiny + base fused + LR, loudness -23 LUFS", TINY_BASE),
    # More channel variety (issue 13): the default's recipe with three channel copies of
    # every training file instead of one.
    **loco_tier_rows("Whisper-tiny + LR, loudness -23 LUFS", LOUDNESS, copies=3),
    # The fast tier: tiny's first two blocks only (states 0-2).
    **loco_tier_rows("Whisper-tiny 0-2 + LR, loudness -23 LUFS", FAST_TIER),
    # The shipped accurate tier: the middle states only (tiny 1-3 + base 2-4).
    **loco_tier_rows("Whisper-tiny 1-3 + base 2-4 + LR, loudness -23 LUFS", TINY_BASE_MIDDLE),
    # The accurate tier without the encoders' embedding outputs (tiny 1-4 + base 1-6).
    **loco_tier_rows("Whisper-tiny 1-4 + base 1-6 + LR, loudness -23 LUFS",
                     TINY_BASE_NO_EMBEDDINGS),
    # The states kept by a rule on in-corpus folds (tiny 2-3 + base 2-3), with and
    # without the tier's channel copies.
    **loco_tier_rows("Whisper-tiny 2-3 + base 2-3 (in-corpus pick) + LR, loudness -23 LUFS",
                     TINY_BASE_PICKED, copies=0),
    **loco_tier_rows("Whisper-tiny 2-3 + base 2-3 (in-corpus pick) + LR, loudness -23 LUFS",
                     TINY_BASE_PICKED),
    # The same rule on each fold's training corpora only: the states differ by fold.
    **{system: {**spec, "features_by_test": TINY_BASE_PICKED_PER_FOLD} for system, spec in
       loco_tier_rows("Whisper-tiny + base, states of the fold's in-corpus pick + LR, "
                      "loudness -23 LUFS", TINY_BASE_PICKED).items()},
    # Statistics pooling (issue 13): each state's mean and standard deviation over frames
    # instead of its mean alone; the default tier's recipe without and with its channel
    # copies (compare the rows of the mean above).
    **loco_tier_rows("Whisper-tiny mean+std + LR, loudness -23 LUFS",
                     with_pooling(LOUDNESS, "mean_std"), copies=0),
    **loco_tier_rows("Whisper-tiny mean+std + LR, loudness -23 LUFS",
                     with_pooling(LOUDNESS, "mean_std")),
    # Late fusion (issue 13): a model per feature set (each the row's recipe), their
    # probabilities averaged: the default tier's and the accurate tier's, and one per
    # state of tiny.en (states 0-4 alone, each read from the all-state cache entry).
    **{system: {**spec, "features": [LOUDNESS, TINY_BASE_MIDDLE]} for system, spec in
       loco_tier_rows("Late fusion of Whisper-tiny and tiny 1-3 + base 2-4 + LR, "
                      "loudness -23 LUFS", LOUDNESS).items()},
    **{system: {**spec, "features": [with_states(LOUDNESS, [k]) for k in range(5)]}
       for system, spec in loco_tier_rows("Late fusion of Whisper-tiny states 0-4 each "
                                          "alone + LR, loudness -23 LUFS", LOUDNESS).items()},
    # New voices at training time: one copy of every training file played 0.9-1.1x as
    # fast (pitch, formants and tempo move together), as its own speaker group.
    **tiny_copy_rows("speed perturbation", "speed"),
    # Vocal tract length perturbation (issue 13): one copy of every training file whose
    # formants moved by 0.9-1.1 (spectral envelope warped) with pitch and tempo kept.
    **tiny_copy_rows("VTLP", "vtlp"),
    # SpecAugment-style masking (issue 13; Park et al. 2019, LibriSpeech policies scaled
    # to ~3 s files): one copy of every training file with two time spans of up to 7.5 %
    # of its duration silenced and one band (0.2-0.5 x its centre, centred 150-4000 Hz)
    # removed, in the waveform. Parameters fixed before any LOCO score.
    **tiny_copy_rows("SpecAugment-style masking", "mask"),
    # Training robust to corpus and speaker (issue 13, lone files): GroupDRO (Sagawa et
    # al. 2020) with the training corpora, or each training speaker, as the groups.
    **tiny_model_rows("GroupDRO over corpora",
                      {**GROUP_DRO, "params": {**GROUP_DRO["params"], "group_by": "corpus"}}),
    **tiny_model_rows("GroupDRO over speakers",
                      {**GROUP_DRO, "params": {**GROUP_DRO["params"], "group_by": "speaker"}}),
    # A fast student distilled from the accurate tier (issue 13): the default tier's
    # recipe fitted to 0.5 x the accurate tier's out-of-fold probabilities + 0.5 x the
    # labels, and to its probabilities alone (alpha 1). Fixed before any LOCO score.
    **distilled_rows(0.5),
    **distilled_rows(1.0),
}
#: ``--distil``: the students and, from the same run, the tiers they are compared with.
DISTIL_SYSTEMS = [
    "Whisper-tiny + LR, loudness -23 LUFS, per-speaker norm + channel augmentation",
    "Whisper-tiny + LR, loudness -23 LUFS, corpus-balanced + channel augmentation",
    *loco_tier_rows("Whisper-tiny 1-3 + base 2-4 + LR, loudness -23 LUFS", TINY_BASE_MIDDLE),
    *distilled_rows(0.5), *distilled_rows(1.0)]


def loco_corpora(root: Path) -> list[str]:
    """Every corpus folder of the developer layout that exists under ``root``."""
    candidates = ["emodb/wav", "ravdess", "crema-d/AudioWAV", "tess", "savee"]
    return [str(root / c) for c in candidates if (root / c).exists()]


def late_fusion(results: list) -> object:
    """Runs of one protocol on different features as one :class:`RunResult` (the first's
    config): each test file predicted as the class whose probability, averaged over the
    runs, is highest."""
    first = results[0]
    keys = ["fold", "path"]
    order = first.predictions.set_index(keys).index
    columns = [c for c in first.predictions.columns if c.startswith("p_")]
    proba = np.mean([r.predictions.set_index(keys).loc[order, columns].to_numpy()
                     for r in results], axis=0)
    predicted = np.array([c.removeprefix("p_") for c in columns])[proba.argmax(axis=1)]
    predictions = first.predictions.assign(predicted=predicted,
                                           **dict(zip(columns, proba.T, strict=True)))
    folds = [FoldResult(f.name, f.y_true, predicted[(predictions["fold"] == f.name).to_numpy()],
                        first.classes) for f in first.folds]
    return dataclasses.replace(
        first, folds=folds, summary=summarise(folds), predictions=predictions,
        per_class=per_class_table(predictions["true"], predicted, first.classes),
        confusion=pooled_confusion(folds, first.classes))


def fit_soft_targets(X: np.ndarray, y: np.ndarray, targets: np.ndarray,
                     sample_weight: np.ndarray | None = None, C: float = 0.01) -> Pipeline:
    """The tiers' classifier (scaler + class-balanced logistic regression) fitted to soft
    targets instead of the labels.

    Cross-entropy to soft targets is weighted logistic regression on the rows repeated
    once per class: row ``i`` as class ``c`` with weight ``targets[i, c]`` times its own
    weight (``sample_weight`` times the balanced weight of its label ``y[i]``, as
    scikit-learn computes it for ``class_weight="balanced"``). With one-hot targets this
    is the labels' fit; the scaler is fitted on the rows once, unrepeated.

    Parameters
    ----------
    X : np.ndarray, shape (n, d)
        Training features.
    y : np.ndarray, shape (n,)
        Labels (their class balance weighs the rows).
    targets : np.ndarray, shape (n, k)
        Probability of each class (``np.unique(y)``, sorted) for each row; rows sum to 1.
    sample_weight : np.ndarray, shape (n,), optional
        E.g. :func:`~emovox.experiment.balance_weights`; ones when None.
    C : float
        Inverse L2 strength of the logistic regression.

    Returns
    -------
    Pipeline
        Fitted ``scale`` + ``classifier`` steps, as :func:`emovox.models.make_classifier`.
    """
    classes = np.unique(y)
    if targets.shape != (len(y), len(classes)):
        raise ValueError(f"targets of shape {targets.shape} for {len(y)} rows of "
                         f"{len(classes)} classes")
    weight = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    weight = weight * compute_class_weight("balanced", classes=classes, y=y,
                                           sample_weight=weight)[np.searchsorted(classes, y)]
    pipeline = make_classifier("logreg", {"C": C, "class_weight": None})
    scaled = pipeline.named_steps["scale"].fit_transform(X)
    repeated = (targets * weight[:, None]).T.ravel()  # class-major: class c, then row i
    keep = np.flatnonzero(repeated > 0)
    pipeline.named_steps["classifier"].fit(
        scaled[keep % len(y)], classes[keep // len(y)], sample_weight=repeated[keep])
    return pipeline


def out_of_fold_proba(config: ExperimentConfig, X: np.ndarray, y: np.ndarray,
                      speakers: np.ndarray, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Each row's class probabilities from a model of ``config`` that never saw its speaker.

    The rows are split into ``n_folds`` folds of whole speakers (shuffled
    :class:`~sklearn.model_selection.GroupKFold`); a model fitted on the other folds
    (:func:`~emovox.experiment.fit_model`: the config's classifier and balance weights)
    predicts each. Columns follow ``np.unique(y)``.
    """
    classes = np.unique(y)
    proba = np.zeros((len(y), len(classes)))
    folds = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fit_rows, held in folds.split(X, y, groups=speakers):
        model = fit_model(config, X[fit_rows], y[fit_rows], speakers[fit_rows])
        proba[np.ix_(held, np.searchsorted(classes, model.classes_))] = (
            model.predict_proba(X[held]))
    return proba


def loco_dataset(root: Path, spec: dict, features: dict,
                 datasets: dict[str, object]) -> tuple[ExperimentConfig, Dataset]:
    """The leave-one-domain-out config of ``spec`` on ``features`` and its dataset,
    prepared once per features into ``datasets``."""
    config = load_config(data={
        "name": "loco", "corpora": loco_corpora(root), "labels": "common6",
        "protocol": {"kind": "loco", "by": "domain"}, **spec, "features": features})
    key = str(features)
    if key not in datasets:
        datasets[key] = prepare_dataset(config, progress=sys.stderr.isatty())
    return config, datasets[key]


def distilled_experiment(root: Path, spec: dict, datasets: dict[str, object]
                         ) -> tuple[RunResult, float]:
    """The leave-one-domain-out run of a student distilled from a teacher, and its seconds.

    ``spec`` is the student's row with ``teacher``: ``{"features", "folds", "alpha"}``
    (and ``"seed"`` of the inner folds, the config's seed when absent).
    In each fold, the teacher (the student's recipe and normalisation on the teacher's
    features) gives every training row (and channel copy) its probabilities out of fold
    (:func:`out_of_fold_proba`: ``folds`` speaker-disjoint folds of the fold's training
    rows only; the test corpus takes no part); the student is fitted to ``alpha`` x them
    + (1 - ``alpha``) x the labels (:func:`fit_soft_targets`, the row's corpus balance).
    The teacher's probabilities are computed once per fold and normalisation (kept in
    ``datasets``); every row using them counts their seconds.
    """
    spec = dict(spec)
    teacher = spec.pop("teacher")
    config, dataset = loco_dataset(root, spec, spec["features"], datasets)
    teacher_config, teacher_dataset = loco_dataset(root, spec, teacher["features"], datasets)
    if not dataset.table["path"].equals(teacher_dataset.table["path"]):
        raise ValueError("the student's and the teacher's datasets hold different files")
    if config.model.balance == "none":
        raise ValueError("the distilled rows weigh corpora equally (model.balance)")
    splits = make_splits(dataset.table, config.protocol.kind, **config.protocol.params)
    folds, seconds = [], 0.0
    for split in splits:
        key = (f"teacher {teacher['features']} {teacher['folds']} {teacher.get('seed')} "
               f"{spec} {split.name}")
        if key not in datasets:
            started = time.perf_counter()
            features = normalised_features(teacher_config, teacher_dataset, split.train,
                                           split.test)
            X, y, speakers, _ = training_rows(teacher_config, teacher_dataset, features,
                                              split.train)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                proba = out_of_fold_proba(teacher_config, X, y, speakers, teacher["folds"],
                                          teacher.get("seed", config.seed))
            datasets[key] = (y, speakers, proba, time.perf_counter() - started)
        teacher_y, teacher_speakers, proba, took = datasets[key]
        started = time.perf_counter()
        features = normalised_features(config, dataset, split.train, split.test)
        X, y, speakers, _ = training_rows(config, dataset, features, split.train)
        if not (np.array_equal(y, teacher_y) and np.array_equal(speakers, teacher_speakers)):
            raise ValueError(f"{split.name}: the student's and the teacher's training rows "
                             "(or channel copies) differ")
        onehot = (y[:, None] == np.unique(y)).astype(float)
        targets = teacher["alpha"] * proba + (1 - teacher["alpha"]) * onehot
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit_soft_targets(X, y, targets,
                                     balance_weights(y, speakers, config.model.balance),
                                     config.model.params["C"])
        predicted = model.predict(features[split.test])
        folds.append(FoldResult(split.name, dataset.y[split.test], predicted,
                                dataset.label_set.classes))
        seconds += took + time.perf_counter() - started
    classes = dataset.label_set.classes
    true, predicted = (np.concatenate([getattr(f, a) for f in folds]) for a in ("y_true",
                                                                                "y_pred"))
    result = RunResult(config, folds, summarise(folds), per_class_table(true, predicted, classes),
                       pooled_confusion(folds, classes), classes,
                       pd.DataFrame({"true": true, "predicted": predicted}), leaky=False)
    return result, seconds


def loco_experiment(root: Path, spec: dict, features: dict | list[dict],
                    datasets: dict[str, object]) -> tuple[object, float]:
    """The leave-one-domain-out run of ``spec`` on ``features`` and its seconds: the fits
    and any augmented copies' extraction, not the files' features (prepared once per
    features into ``datasets``). A list of features is late fusion: a model on each,
    their probabilities averaged (:func:`late_fusion`). A ``spec`` with a ``teacher`` is
    a distilled student (:func:`distilled_experiment`)."""
    if "teacher" in spec:
        return distilled_experiment(root, {**spec, "features": features}, datasets)
    if isinstance(features, list):
        runs = [loco_experiment(root, spec, f, datasets) for f in features]
        return late_fusion([result for result, _ in runs]), sum(s for _, s in runs)
    config, dataset = loco_dataset(root, spec, features, datasets)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(config, dataset, progress=False)
    return result, time.perf_counter() - started


def run_loco(root: Path, only: str | None = None, systems: list[str] | None = None
             ) -> list[dict]:
    """Leave-one-domain-out UAR of every system (of ``systems`` when given); one row per
    system and test domain.

    A system with ``features_by_test`` (test domain -> features) is run once per
    distinct features and keeps, from each run, the folds testing its domains. A system
    whose ``features`` is a list is their late fusion (:func:`loco_experiment`).
    """
    rows = []
    datasets: dict[str, object] = {}
    for system, spec in LOCO_SYSTEMS.items():
        if (only and only.lower() not in system.lower()) or (systems and system not in systems):
            continue
        spec = dict(spec)
        by_test = spec.pop("features_by_test", None)
        variants = ([(spec["features"], None)] if by_test is None else
                    [(features, [d for d, f in by_test.items() if f == features])
                     for features in {str(f): f for f in by_test.values()}.values()])
        seconds, mine = 0.0, []
        for features, tests in variants:
            result, took = loco_experiment(root, spec, features, datasets)
            seconds += took
            for fold in result.folds:
                held = fold.name.split("test=")[-1]
                if tests is None or held in tests:
                    mine.append({"system": system, "test": held,
                                 "train": fold.name.split(" ")[0], "uar": fold.scores["uar"],
                                 "n": len(fold.y_true), "protocol": protocol_description(result)})
        rows += [{**r, "seconds": seconds} for r in sorted(mine, key=lambda r: r["test"])]
        scores = "  ".join(f"{r['test']} {r['uar']:.3f}" for r in rows[-len(mine):])
        print(f"{system:40s} {scores}  ({seconds:.0f} s)", flush=True)
    return rows


def loco_markdown(rows: list[dict]) -> str:
    """Systems down, test domains across: UAR of leave-one-corpus-out, then the mean ±
    standard deviation over the test domains and the seconds the row took (fits and
    any feature extraction it had to do)."""
    domains = sorted({r["test"] for r in rows})
    lines = ["| system | " + " | ".join(domains) + " | mean ± std | s |",
             "|---|" + "---|" * (len(domains) + 2)]
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        scores = {r["test"]: r["uar"] for r in mine}
        cells = [f"{scores[d]:.3f}" if d in scores else "" for d in domains]
        values = np.array(list(scores.values()))
        lines.append(f"| {system} | " + " | ".join(cells)
                     + f" | {values.mean():.3f} ± {values.std():.3f} | {mine[0]['seconds']:.0f} |")
    return "\n".join(lines)


def run(root: Path, only: str | None = None, systems: dict[str, dict] | None = None
        ) -> list[dict]:
    """Run every benchmark x system (of ``systems``: :data:`SYSTEMS` and the leaky
    split when None); return one row of scores per run."""
    rows = []
    systems = systems or SYSTEMS
    jobs = [(b, s, None) for b in BENCHMARKS for s in systems]
    jobs += [LEAKY] if systems is SYSTEMS else []
    datasets: dict[tuple[str, str], object] = {}
    for bench, system, protocol in jobs:
        if only and only.lower() not in f"{bench} {system}".lower():
            continue
        spec = {**BENCHMARKS[bench], **systems[system], "name": "benchmark"}
        spec["corpora"] = [c.format(root=root) for c in spec["corpora"]]
        if protocol:
            spec["protocol"] = protocol
        config = load_config(data=spec)
        key = (bench, str(spec["features"]))
        started = time.perf_counter()
        if key not in datasets:
            datasets[key] = prepare_dataset(config, progress=sys.stderr.isatty())
        dataset = datasets[key]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_experiment(config, dataset, progress=False)
        rows.append({
            "benchmark": bench, "system": system,
            "protocol": protocol_description(result), "leaky": result.leaky,
            **{s: mean_std(result.summary, s) for s in SCORES},
            "uar_mean": float(result.summary.loc["mean", "uar"]),
            "n": len(dataset.table), "features_s": dataset.feature_seconds,
            "fit_s": result.seconds["train_and_test"],
            "wall_s": time.perf_counter() - started,
        })
        print(f"{bench:46s} {system:28s} UAR {rows[-1]['uar']}  WA {rows[-1]['wa']}  "
              f"F1 {rows[-1]['macro_f1']}  ({rows[-1]['wall_s']:.0f} s)"
              + ("  [LEAKY random split]" if result.leaky else ""), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = ["| benchmark | system | UAR | WA | macro-F1 | protocol | n | features s "
             "| fit+test s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        flag = " **(LEAKY)**" if r["leaky"] else ""
        protocol = "random 75/25 utterance split: LEAKY" if r["leaky"] else r["protocol"]
        lines.append(f"| {r['benchmark']} | {r['system']}{flag} | {r['uar']} | {r['wa']} | "
                     f"{r['macro_f1']} | {protocol} | {r['n']} | {r['features_s']:.0f} | "
                     f"{r['fit_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_corpora_argument(parser)
    parser.add_argument("--only", help="run only benchmark/system pairs whose names contain "
                        "this text (e.g. Whisper, EmoDB)")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    parser.add_argument("--loco", action="store_true",
                        help="the leave-one-corpus-out table (raw and each adaptation)")
    parser.add_argument("--distil", action="store_true",
                        help="leave-one-corpus-out: only the students distilled from the "
                        "accurate tier, and the default and accurate tiers' rows")
    parser.add_argument("--pick-states", action="store_true",
                        help="score each encoder state alone in-corpus; print the states kept")
    args = parser.parse_args()
    root = corpora_root(args)
    if args.pick_states:
        rows = run(root, args.only, single_state_systems())
        print_table(state_scores_markdown(rows), args.markdown)
        return
    loco = args.loco or args.distil
    rows = (run_loco(root, args.only, DISTIL_SYSTEMS if args.distil else None) if loco
            else run(root, args.only))
    if not rows:
        sys.exit(f"no benchmark or system matches {args.only!r}")
    print_table(loco_markdown(rows) if loco else markdown(rows), args.markdown)


if __name__ == "__main__":
    main()
