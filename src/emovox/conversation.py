"""How each speaker of a conversation felt: a summary of a timeline with speakers.

A timeline made with ``speakers`` (:func:`emovox.timeline.iter_timeline`) has a
``speaker`` column and, in ``attrs["speaker_turns"]``, when each speaker spoke.
:func:`speaker_summary` shares each speaker's speech time out among the emotions of
their windows: every instant of a turn takes the emotion of the speaker's classified
window that covers it with the nearest centre (``unclassified`` when none does), so a
speaker's emotion seconds add up to their speech time, and the speakers' speech times
to the recording's. :func:`strongest_moments` lists each speaker's most confident
moments of an emotion other than neutral (overlapping windows of one emotion merged).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Seconds per step when speech time is shared out among windows.
STEP = 0.01
#: Label of speech time no classified window of its speaker covers.
UNCLASSIFIED = "unclassified"
#: Emotions that are not "moments".
CALM = ("neutral", "calm", "uncertain")


def _turns(frame: pd.DataFrame) -> list[tuple[float, float, str]]:
    turns = frame.attrs.get("speaker_turns")
    if turns is not None:
        return [(float(a), float(b), str(s)) for a, b, s in turns]
    # A timeline read back from a file: the speech windows stand for the turns.
    rows = frame[frame["speech"] & frame["speaker"].notna()].reset_index()
    return [(float(r.start), float(r.end), str(r.speaker)) for r in rows.itertuples()]


def _check(frame: pd.DataFrame) -> None:
    if "speaker" not in frame.columns:
        raise ValueError("not a timeline with speakers: make it with speakers='auto' or N")


def speaker_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Each speaker's speech time, and its share per emotion.

    Parameters
    ----------
    frame : pandas.DataFrame
        A timeline with a ``speaker`` column, of one file.

    Returns
    -------
    pandas.DataFrame
        One row per speaker (index ``speaker``): ``speech_seconds``, ``speech_share``
        (of all speakers' speech), then one column per emotion found (and
        ``unclassified``) with the share of the speaker's speech time (each row sums
        to 1), and ``main_emotion``. ``attrs["seconds"]`` holds the same in seconds.

    Raises
    ------
    ValueError
        The timeline has no ``speaker`` column.
    """
    _check(frame)
    turns = _turns(frame)
    speakers = list(dict.fromkeys(frame.attrs.get("speakers")
                                  or [s for _, _, s in turns]))
    voiced = frame[frame["emotion"].notna() & frame["speaker"].notna()]
    seconds: dict[str, dict[str, float]] = {s: {} for s in speakers}
    for speaker in speakers:
        mine = voiced[voiced["speaker"] == speaker]
        starts = mine.index.get_level_values("start").to_numpy(float)
        ends = mine.index.get_level_values("end").to_numpy(float)
        centres = (starts + ends) / 2
        order = np.argsort(centres, kind="stable")
        starts, ends, centres = starts[order], ends[order], centres[order]
        emotions = mine["emotion"].to_numpy(object)[order]
        for a, b, who in turns:
            if who != speaker or b <= a:
                continue
            edges = np.append(np.arange(a, b, STEP), b)
            mids, widths = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
            labels = np.full(len(mids), UNCLASSIFIED, dtype=object)
            if len(centres):
                right = np.clip(np.searchsorted(centres, mids), 0, len(centres) - 1)
                left = np.clip(right - 1, 0, len(centres) - 1)
                near = np.where(np.abs(centres[left] - mids) <= np.abs(centres[right] - mids),
                                left, right)
                covered = (starts[near] <= mids) & (mids < ends[near])
                labels[covered] = emotions[near[covered]]
            for label in np.unique(labels):
                seconds[speaker][label] = seconds[speaker].get(label, 0.0) + float(
                    widths[labels == label].sum())
    emotions_found = sorted({e for per in seconds.values() for e in per} - {UNCLASSIFIED})
    columns = [*emotions_found, UNCLASSIFIED]
    table = pd.DataFrame([[seconds[s].get(c, 0.0) for c in columns] for s in speakers],
                         index=pd.Index(speakers, name="speaker"), columns=columns)
    total = table.sum(axis=1)
    out = pd.DataFrame({"speech_seconds": total,
                        "speech_share": total / total.sum() if total.sum() else 0.0})
    shares = table.div(total.where(total > 0, 1.0), axis=0)
    out = pd.concat([out, shares], axis=1)
    out["main_emotion"] = [table.loc[s, emotions_found].idxmax()
                           if emotions_found and table.loc[s, emotions_found].sum() > 0
                           else None for s in speakers]
    out.attrs["seconds"] = table
    return out


def strongest_moments(frame: pd.DataFrame, top: int = 3) -> pd.DataFrame:
    """Each speaker's ``top`` most confident moments of an emotion other than neutral.

    A moment is a stretch of one speaker's overlapping (or touching) windows of one
    emotion, so overlapping windows of the same outburst count once (with a 1 s hop,
    each second of it is in two 2 s windows): it spans them all and its confidence is
    the highest of theirs.

    Parameters
    ----------
    frame : pandas.DataFrame
        A timeline with a ``speaker`` column, of one file.
    top : int
        Most moments per speaker.

    Returns
    -------
    pandas.DataFrame
        Columns ``speaker``, ``start``, ``end``, ``emotion``, ``confidence``, best
        first within each speaker.

    Raises
    ------
    ValueError
        The timeline has no ``speaker`` column.
    """
    _check(frame)
    rows = frame[frame["emotion"].notna() & frame["speaker"].notna()
                 & ~frame["emotion"].isin(CALM)].reset_index()
    rows = rows.sort_values(["speaker", "start"], kind="stable")
    moments: list[dict[str, object]] = []
    for row in rows.itertuples():
        last = moments[-1] if moments else None
        if (last is not None and last["speaker"] == row.speaker
                and last["emotion"] == row.emotion and row.start <= last["end"]):
            last["end"] = max(float(last["end"]), float(row.end))
            last["confidence"] = max(float(last["confidence"]), float(row.confidence))
        else:
            moments.append({"speaker": row.speaker, "start": float(row.start),
                            "end": float(row.end), "emotion": row.emotion,
                            "confidence": float(row.confidence)})
    columns = ["speaker", "start", "end", "emotion", "confidence"]
    found = pd.DataFrame(moments, columns=columns)
    found = found.sort_values(["speaker", "confidence"], ascending=[True, False],
                              kind="stable")
    return found.groupby("speaker", sort=False).head(top).reset_index(drop=True)
