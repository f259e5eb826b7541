"""Evaluation protocols: which utterances train, validate and test each fold.

Speaker-disjoint by default. Every split records whether it is ``leaky`` (the same
speaker may appear in training and test, or the test set chooses the model); only
:func:`random_split` and the ``validate_on_test`` option of :func:`make_splits` are,
they must be asked for explicitly, and they always emit a :class:`LeakageWarning`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from emovox.errors import ConfigError


class LeakageWarning(UserWarning):
    """A split lets test speakers appear in training: results will be optimistic."""


LEAKAGE_MESSAGE = (
    "LEAKY SPLIT: utterances are split at random, so the same speakers are in training "
    "and test; accuracy will be optimistic and does not measure unseen voices"
)

VALIDATE_ON_TEST_MESSAGE = (
    "LEAKY VALIDATION: the test set is also the validation set, so the model picks its "
    "checkpoint (early stopping, best epoch) on the test data; accuracy will be optimistic"
)


@dataclass
class Split:
    """One fold: row positions (into the utterance table) for train, validation and test.

    Attributes
    ----------
    name : str
        Fold name, e.g. ``"test=ravdess:01,ravdess:02"``.
    train, test : np.ndarray of int
        Row positions.
    valid : np.ndarray of int
        Validation rows carved from training speakers (may be empty).
    leaky : bool
        True when speakers may be shared between train and test.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    valid: np.ndarray = field(default_factory=lambda: np.array([], dtype=int))
    leaky: bool = False


def _speakers(table: pd.DataFrame) -> list[str]:
    speakers = sorted(table["speaker"].astype(str).unique())
    if len(speakers) < 2:
        raise ConfigError(
            "a speaker-independent protocol needs at least 2 speakers; this table has "
            f"{len(speakers)} (give speakers in the corpus or manifest)"
        )
    return speakers


def _rows(table: pd.DataFrame, mask: pd.Series | np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.asarray(mask))


def _fold(table: pd.DataFrame, test_speakers: Sequence[str], name: str | None = None) -> Split:
    is_test = table["speaker"].astype(str).isin(set(test_speakers))
    label = name or "test=" + ",".join(test_speakers)
    return Split(label, _rows(table, ~is_test), _rows(table, is_test))


def leave_one_speaker_out(table: pd.DataFrame) -> list[Split]:
    """One fold per speaker, tested on that speaker and trained on all others."""
    return [_fold(table, [s], f"test={s}") for s in _speakers(table)]


def speaker_group_folds(
    table: pd.DataFrame,
    n_folds: int | None = None,
    groups: Sequence[Sequence[str]] | None = None,
) -> list[Split]:
    """Folds over consecutive groups of speakers (in sorted order), or given groups.

    With RAVDESS and ``n_folds=6`` the test groups are actors 1-4, 5-8, ..., 21-24
    (each group holds two male and two female actors). With several corpora, each
    corpus's speakers are chunked separately and fold i tests chunk i of every corpus.

    Parameters
    ----------
    n_folds : int, optional
        Number of folds; speakers are split into this many consecutive groups.
    groups : sequence of sequences of str, optional
        Explicit test groups of speaker ids (overrides ``n_folds``).
    """
    speakers = _speakers(table)
    if groups is None:
        if n_folds is None or not 2 <= n_folds <= len(speakers):
            raise ConfigError(
                f"n_folds must be between 2 and the number of speakers ({len(speakers)}), "
                f"got {n_folds}"
            )
        groups = [[] for _ in range(n_folds)]
        # Within each corpus, consecutive speaker chunks; fold i joins chunk i of every
        # corpus, so each fold tests on every corpus (one corpus: plain chunks).
        by_corpus = table.groupby(table["corpus"].astype(str))["speaker"]
        for _, corpus_speakers in by_corpus:
            names = np.array(sorted(corpus_speakers.astype(str).unique()), dtype=object)
            for group, chunk in zip(groups, np.array_split(names, n_folds), strict=True):
                group.extend(chunk.tolist())
        groups = [g for g in groups if g]
    known = set(speakers)
    for group in groups:
        unknown = [s for s in group if s not in known]
        if unknown:
            raise ConfigError(f"unknown speakers in fold: {unknown}; known: {speakers[:6]}...")
    return [_fold(table, list(map(str, g))) for g in groups]


def holdout_speakers(
    table: pd.DataFrame,
    test_speakers: Sequence[str],
    valid_speakers: Sequence[str] | None = None,
    valid_fraction: float = 0.0,
    valid_by: str = "speaker",
    seed: int = 0,
) -> list[Split]:
    """A single fold with fixed test speakers and a validation set from the rest.

    Parameters
    ----------
    test_speakers : sequence of str
        Speakers held out for test.
    valid_speakers : sequence of str, optional
        Speakers used for validation (model selection); taken out of training.
    valid_fraction : float
        Without ``valid_speakers``: fraction of the training speakers (``valid_by=
        "speaker"``) or of the training utterances (``valid_by="utterance"``, which
        shares speakers between train and validation but never with test) to validate on.
    """
    split = _fold(table, [str(s) for s in test_speakers])
    if len(split.test) == 0:
        raise ConfigError(f"none of the test speakers {list(test_speakers)} are in the data")
    split.name = "holdout " + split.name
    speaker_of = table["speaker"].astype(str).to_numpy()
    if valid_speakers:
        is_valid = np.isin(speaker_of[split.train], [str(s) for s in valid_speakers])
    elif valid_fraction > 0:
        rng = np.random.default_rng(seed)
        if valid_by == "speaker":
            train_speakers = sorted(set(speaker_of[split.train]))
            n_valid = max(1, round(valid_fraction * len(train_speakers)))
            chosen = rng.choice(train_speakers, size=n_valid, replace=False)
            is_valid = np.isin(speaker_of[split.train], chosen)
        elif valid_by == "utterance":
            is_valid = rng.random(len(split.train)) < valid_fraction
        else:
            raise ConfigError(f"valid_by must be 'speaker' or 'utterance', got {valid_by!r}")
    else:
        return [split]
    split.valid = split.train[is_valid]
    split.train = split.train[~is_valid]
    return [split]


def cross_corpus(
    table: pd.DataFrame, train_corpora: Sequence[str], test_corpora: Sequence[str],
    per_test_corpus: bool = False,
) -> list[Split]:
    """Train on some corpora and test on others (use a label set they share).

    Parameters
    ----------
    train_corpora, test_corpora : sequence of str
        Corpus names (the ``corpus`` column), disjoint.
    per_test_corpus : bool
        One fold per test corpus (each scored on its own) instead of one fold testing
        them all together.
    """
    corpus = table["corpus"].astype(str)
    overlap = set(train_corpora) & set(test_corpora)
    if overlap:
        raise ConfigError(f"corpora {sorted(overlap)} are in both train and test")
    for name in [*train_corpora, *test_corpora]:
        if name not in set(corpus):
            raise ConfigError(f"corpus {name!r} is not in the data ({sorted(set(corpus))})")
    if per_test_corpus:
        return [cross_corpus(table, train_corpora, [name])[0] for name in test_corpora]
    return [
        Split(
            f"train={'+'.join(train_corpora)} test={'+'.join(test_corpora)}",
            _rows(table, corpus.isin(train_corpora)),
            _rows(table, corpus.isin(test_corpora)),
        )
    ]


def corpus_domains(table: pd.DataFrame) -> pd.Series:
    """The recording domain of each row: its corpus, split by vocal channel if known.

    RAVDESS speech and RAVDESS song are one corpus with the same 24 actors but two
    domains (``ravdess-speech``, ``ravdess-song``); every other corpus is one domain.
    """
    domain = table["corpus"].astype(str)
    if "channel" in table:
        channel = table["channel"].astype("string").fillna("")
        domain = domain.where(channel == "", domain + "-" + channel)
    return domain


def leave_one_corpus_out(table: pd.DataFrame, by: str = "corpus") -> list[Split]:
    """One fold per corpus (or domain): test on it, train on all the others.

    Parameters
    ----------
    by : {"corpus", "domain"}
        Hold out whole corpora, or recording domains (:func:`corpus_domains`, so
        RAVDESS speech and song are held out in turn). Training never keeps a row of
        a test speaker: when RAVDESS song is tested, RAVDESS speech (same actors) is
        left out of training too.
    """
    if by not in {"corpus", "domain"}:
        raise ConfigError(f"by must be 'corpus' or 'domain', got {by!r}")
    unit = table["corpus"].astype(str) if by == "corpus" else corpus_domains(table)
    names = sorted(unit.unique())
    if len(names) < 2:
        raise ConfigError(f"leave-one-corpus-out needs at least 2 {by}s, got {names}")
    speaker = table["speaker"].astype(str)
    splits = []
    for held in names:
        test = unit == held
        train = ~test & ~speaker.isin(set(speaker[test]))
        if not train.any():
            raise ConfigError(f"nothing left to train on when {held} is held out")
        kept = sorted(set(unit[train]))
        splits.append(Split(f"train={'+'.join(kept)} test={held}", _rows(table, train),
                            _rows(table, test)))
    return splits


def random_split(
    table: pd.DataFrame,
    test_fraction: float = 0.25,
    n_repeats: int = 1,
    seed: int = 0,
    stratify: bool = True,
    valid_fraction: float = 0.0,
) -> list[Split]:
    """Random utterance split (LEAKY: speakers are shared). Always warns.

    Exists to reproduce published experiments that split this way, and to show how
    much such a split inflates results.

    Parameters
    ----------
    test_fraction : float
        Share of all utterances tested on.
    n_repeats : int
        Number of splits, with seeds ``seed``, ``seed + 1``, ...
    seed : int
    stratify : bool
        Keep class proportions (needs a ``label`` column).
    valid_fraction : float
        Share of *all* utterances taken out of training for validation (random, like
        the test rows): ``test_fraction=0.1, valid_fraction=0.1`` is an 80/10/10 split.
    """
    warnings.warn(LEAKAGE_MESSAGE, LeakageWarning, stacklevel=2)
    from sklearn.model_selection import train_test_split

    if not 0 <= valid_fraction < 1 - test_fraction:
        raise ConfigError(f"valid_fraction must be in [0, {1 - test_fraction:g}) with "
                          f"test_fraction={test_fraction:g}, got {valid_fraction}")
    labels = table["label"].to_numpy() if stratify and "label" in table else None
    rows = np.arange(len(table))
    splits = []
    for repeat in range(n_repeats):
        train, test = train_test_split(
            rows, test_size=test_fraction, random_state=seed + repeat,
            stratify=labels,
        )
        valid = np.array([], dtype=int)
        if valid_fraction > 0:
            # A share of all rows, drawn from what is left after the test rows.
            train, valid = train_test_split(
                train, test_size=valid_fraction / (1 - test_fraction),
                random_state=seed + repeat, stratify=None if labels is None else labels[train],
            )
        splits.append(Split(f"random#{repeat}", np.sort(train), np.sort(test),
                            np.sort(valid), leaky=True))
    return splits


def validate_on_test(splits: Sequence[Split]) -> list[Split]:
    """Make each split validate on its own test rows (LEAKY). Always warns.

    Reproduces experiments that passed the test set as Keras ``validation_data``: the
    epoch kept (and early stopping) is then chosen on the test data. Any validation
    rows a split had go back into training, as in such experiments.
    """
    warnings.warn(VALIDATE_ON_TEST_MESSAGE, LeakageWarning, stacklevel=2)
    return [
        Split(f"{split.name} valid=test", np.sort(np.concatenate([split.train, split.valid])),
              split.test, split.test.copy(), leaky=True)
        for split in splits
    ]


def with_validation(
    table: pd.DataFrame, split: Split, fraction: float = 0.2, seed: int = 0
) -> Split:
    """Carve a speaker-disjoint validation set out of a split's training speakers."""
    if len(split.valid) or fraction <= 0:
        return split
    speaker_of = table["speaker"].astype(str).to_numpy()
    train_speakers = sorted(set(speaker_of[split.train]))
    if split.leaky or len(train_speakers) < 2:
        rng = np.random.default_rng(seed)
        is_valid = rng.random(len(split.train)) < fraction
    else:
        rng = np.random.default_rng(seed)
        n_valid = max(1, round(fraction * len(train_speakers)))
        chosen = rng.choice(train_speakers, size=n_valid, replace=False)
        is_valid = np.isin(speaker_of[split.train], chosen)
    return Split(split.name, split.train[~is_valid], split.test, split.train[is_valid],
                 split.leaky)


def check_speaker_disjoint(table: pd.DataFrame, split: Split) -> None:
    """Raise AssertionError if a non-leaky split shares a speaker between train and test."""
    if split.leaky:
        return
    speaker_of = table["speaker"].astype(str).to_numpy()
    shared = set(speaker_of[split.train]) & set(speaker_of[split.test])
    shared |= set(speaker_of[split.valid]) & set(speaker_of[split.test])
    if shared:
        raise AssertionError(f"fold {split.name}: speakers in train and test: {sorted(shared)}")


def select_rows(table: pd.DataFrame, conditions: Mapping[str, Any] | None) -> pd.DataFrame:
    """Keep rows matching every ``column: value`` (or ``column: [values]``) condition.

    Used for gender-only experiments (``{"gender": "male"}``) or one corpus's subset.
    """
    if not conditions:
        return table
    mask = pd.Series(True, index=table.index)
    for column, wanted in conditions.items():
        if column not in table:
            raise ConfigError(f"subset: no column {column!r}; columns: {list(table.columns)}")
        values = wanted if isinstance(wanted, list | tuple | set) else [wanted]
        mask &= table[column].isin(values)
    if not mask.any():
        raise ConfigError(f"subset {dict(conditions)} leaves no utterances")
    return table.loc[mask].reset_index(drop=True)


PROTOCOLS = {
    "loso": leave_one_speaker_out,
    "speaker_folds": speaker_group_folds,
    "holdout": holdout_speakers,
    "cross_corpus": cross_corpus,
    "loco": leave_one_corpus_out,
    "random": random_split,
}


def make_splits(table: pd.DataFrame, kind: str, **params: Any) -> list[Split]:
    """Build the folds of a named protocol and check they keep speakers apart.

    Parameters
    ----------
    table : pd.DataFrame
        Utterance table with ``speaker`` (and ``label``/``corpus`` as needed).
    kind : str
        One of ``loso``, ``speaker_folds``, ``holdout``, ``cross_corpus``, ``loco``,
        ``random`` (leaky; needs ``allow_leakage=True``).
    **params
        Arguments of the protocol function, and ``validate_on_test=True`` (leaky; needs
        ``allow_leakage=True``) to validate every split on its test rows, see
        :func:`validate_on_test`.
    """
    if kind not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {kind!r}; known: {', '.join(PROTOCOLS)}")
    allow_leakage = params.pop("allow_leakage", False)
    on_test = params.pop("validate_on_test", False)
    if kind == "random" and not allow_leakage:
        raise ConfigError(
            "protocol 'random' shares speakers between train and test; set "
            "allow_leakage: true to run it anyway (results will be labelled leaky)"
        )
    if on_test and not allow_leakage:
        raise ConfigError(
            "validate_on_test chooses the model on the test data; set allow_leakage: true "
            "to run it anyway (results will be labelled leaky)"
        )
    try:
        splits = PROTOCOLS[kind](table, **params)
    except TypeError as error:
        raise ConfigError(f"protocol {kind!r}: {error}") from None
    if on_test:
        splits = validate_on_test(splits)
    for split in splits:
        check_speaker_disjoint(table, split)
        if len(split.train) == 0 or len(split.test) == 0:
            raise ConfigError(f"protocol {kind!r}: fold {split.name} has an empty train or test")
    return splits
