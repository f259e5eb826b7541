"""Summaries of an utterance table: counts per emotion, speaker, gender and corpus."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emovox.labels import CANONICAL_EMOTIONS

UNKNOWN = "unknown"


def _emotion_order(table: pd.DataFrame) -> list[str]:
    present = set(table["emotion"].astype(str))
    ordered = [e for e in CANONICAL_EMOTIONS if e in present]
    return ordered + sorted(present - set(ordered))


def _genders(table: pd.DataFrame) -> pd.Series:
    if "gender" not in table:
        return pd.Series(UNKNOWN, index=table.index, dtype=object)
    return table["gender"].astype(object).where(table["gender"].notna(), UNKNOWN)


def _per_emotion(table: pd.DataFrame, key: pd.Series, emotions: list[str]) -> pd.DataFrame:
    counts = pd.crosstab(key, table["emotion"].astype(str))
    return counts.reindex(columns=emotions, fill_value=0)


def describe(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Count utterances per emotion, speaker, gender and corpus.

    Parameters
    ----------
    table : pd.DataFrame
        Utterance table (``emotion``, ``speaker``, ``gender``, ``corpus`` columns).

    Returns
    -------
    dict of str to pd.DataFrame
        ``"emotion"``: index emotion (canonical order), columns ``count``, ``fraction``.
        ``"speaker"``: index speaker, columns ``corpus``, ``gender``, ``count`` and one
        column per emotion.
        ``"gender"``: index gender (``unknown`` for missing), columns ``count``,
        ``speakers`` and one column per emotion.
        ``"corpus"``: index corpus, columns ``count``, ``speakers``, ``female``,
        ``male`` (speaker counts) and one column per emotion.
    """
    table = table.reset_index(drop=True)
    emotions = _emotion_order(table) if len(table) else []
    genders = _genders(table)
    total = len(table)

    counts = table["emotion"].astype(str).value_counts().reindex(emotions, fill_value=0)
    by_emotion = pd.DataFrame(
        {"count": counts, "fraction": counts / total if total else counts.astype(float)}
    )
    by_emotion.index.name = "emotion"

    speakers = table["speaker"].astype(str)
    first = table.assign(gender=genders).groupby(speakers, sort=True)
    by_speaker = pd.DataFrame(
        {
            "corpus": first["corpus"].first(),
            "gender": first["gender"].first(),
            "count": first.size(),
        }
    )
    by_speaker = by_speaker.join(_per_emotion(table, speakers, emotions))
    by_speaker.index.name = "speaker"

    by_gender = pd.DataFrame(
        {
            "count": genders.value_counts(),
            "speakers": speakers.groupby(genders).nunique(),
        }
    ).join(_per_emotion(table, genders, emotions))
    order = [g for g in ("female", "male", UNKNOWN) if g in by_gender.index]
    by_gender = by_gender.reindex(order + sorted(set(by_gender.index) - set(order)))
    by_gender.index.name = "gender"

    corpora = table["corpus"].astype(str)
    speaker_gender = pd.DataFrame({"corpus": corpora, "speaker": speakers, "gender": genders})
    speaker_gender = speaker_gender.drop_duplicates("speaker")
    by_corpus = pd.DataFrame(
        {
            "count": corpora.value_counts(),
            "speakers": speakers.groupby(corpora).nunique(),
            "female": speaker_gender[speaker_gender["gender"] == "female"]
            .groupby("corpus")
            .size(),
            "male": speaker_gender[speaker_gender["gender"] == "male"].groupby("corpus").size(),
        }
    )
    by_corpus[["female", "male"]] = by_corpus[["female", "male"]].fillna(0).astype(int)
    by_corpus = by_corpus.join(_per_emotion(table, corpora, emotions)).sort_index()
    by_corpus.index.name = "corpus"

    return {
        "emotion": by_emotion,
        "speaker": by_speaker,
        "gender": by_gender,
        "corpus": by_corpus,
    }


def plot_counts(table: pd.DataFrame, path: str | Path, title: str | None = None) -> Path:
    """Save a bar chart of utterances per emotion, stacked by speaker gender, as PNG.

    The file is written to a temporary file in the same folder and moved into place,
    so a reader never sees a half-written image.

    Parameters
    ----------
    table : pd.DataFrame
        Utterance table.
    path : str or Path
        Output ``.png`` file; its folder is created if needed.
    title : str, optional
        Chart title (default: number of utterances and speakers).

    Returns
    -------
    Path
        The written file.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    emotions = _emotion_order(table) if len(table) else []
    genders = _genders(table)
    counts = _per_emotion(table, genders, emotions) if len(table) else pd.DataFrame()
    order = [g for g in ("female", "male", UNKNOWN) if g in counts.index]
    colours = {"female": "#d95f02", "male": "#1b9e77", UNKNOWN: "#999999"}

    figure = Figure(figsize=(max(4.0, 0.9 * len(emotions) + 1.5), 3.6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    bottom = [0] * len(emotions)
    for gender in order:
        values = [int(v) for v in counts.loc[gender, emotions]]
        axes.bar(emotions, values, bottom=bottom, label=gender, color=colours.get(gender))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    for x, height in enumerate(bottom):
        axes.annotate(str(height), (x, height), ha="center", va="bottom", fontsize=8)
    axes.set_ylabel("utterances")
    n_speakers = table["speaker"].nunique() if len(table) else 0
    axes.set_title(title or f"{len(table)} utterances, {n_speakers} speakers", fontsize=10)
    if order:
        axes.legend(title="gender", fontsize=8, title_fontsize=8, frameon=False,
                    loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes.tick_params(axis="x", labelrotation=30)
    axes.margins(y=0.12)
    figure.tight_layout()

    from emovox.plots import _save

    _save(figure, path)
    return path
