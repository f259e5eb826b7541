"""A projection of voice embeddings that keeps the speaker and drops the emotion.

GE2E embeddings of emotional speech move with the emotion about as much as with the
voice: in a conversation of acted speech, windows of one speaker in two emotions are
less alike (mean-removed cosine 0.07) than windows of two speakers in one emotion are
unlike (-0.05), so clustering finds arousal, not speakers (docs/RESULTS.md, issue 14).
Linear discriminant analysis on the embeddings of many speakers, each heard in many
emotions, finds the directions along which speakers differ more than one speaker's
emotions do (the classic LDA step before speaker clustering; Dehak et al. 2011). The
packaged projection (``data/voice_lda.npz``) was fitted on the developer corpora's
54 speakers with ``tools/build_voice_projection.py``.

``$EMOVOX_VOICE_PROJECTION`` overrides it: a path to another ``.npz`` of the same
form (e.g. fitted on other speakers), or ``none`` to cluster the raw embeddings.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

#: Environment variable naming another projection file, or ``none``.
PROJECTION_ENV_VAR = "EMOVOX_VOICE_PROJECTION"
#: Size of the GE2E voice embeddings the packaged projection takes.
EMBEDDING_SIZE = 256
_LOADED: dict[str, np.ndarray | None] = {}


def packaged_projection_path(encoder: str = "ge2e") -> Path:
    """The projection file that ships with emovox for a voice encoder's embeddings
    (``voice_lda.npz`` for GE2E, ``voice_lda_<encoder>.npz`` for the others)."""
    name = "voice_lda.npz" if encoder == "ge2e" else f"voice_lda_{encoder}.npz"
    return Path(str(resources.files("emovox") / "data" / name))


def fit_projection(embeddings: np.ndarray, speakers: Sequence[str]) -> np.ndarray:
    """The LDA directions that separate ``speakers`` best, relative to their spread.

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, dim)
        Voice embeddings of windows, each speaker heard in several emotions.
    speakers : sequence of str, length n
        The speaker of each window (at least two speakers).

    Returns
    -------
    np.ndarray, float32, shape (dim, n_speakers - 1)
        Apply as ``embeddings @ projection``.
    """
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    speakers = np.asarray(speakers).astype(str)
    n_speakers = len(np.unique(speakers))
    if n_speakers < 2:
        raise ValueError("fitting a voice projection needs at least two speakers")
    # Shrinkage (Ledoit-Wolf): hundreds of dimensions against a few thousand windows.
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(np.asarray(embeddings, dtype=np.float64), speakers)
    return np.ascontiguousarray(lda.scalings_[:, :n_speakers - 1], dtype=np.float32)


def fit_projection_on_corpora(tables: Sequence, per_speaker: int = 40, seed: int = 1,
                              progress: bool = False, encoder: str = "ge2e"
                              ) -> tuple[np.ndarray, str]:
    """:func:`fit_projection` on windows of up to ``per_speaker`` utterances of every
    speaker of ``tables`` (corpus tables with ``path`` and ``speaker`` columns),
    embedded by the voice encoder named ``encoder``.

    Returns
    -------
    projection : np.ndarray, shape (dim, n_speakers - 1)
    note : str
        What it was fitted on, for the file.
    """
    from tqdm.auto import tqdm

    from emovox.diarization import embed_windows

    rng = np.random.default_rng(seed)
    vectors, who = [], []
    groups = [(s, g) for t in tables for s, g in t.groupby("speaker")]
    for speaker, group in tqdm(groups, unit="speaker", disable=not progress):
        for path in rng.permutation(sorted(group["path"]))[:per_speaker]:
            heard = embed_windows(path, vad="energy", encoder=encoder)
            vectors.append(heard.embeddings)
            who += [str(speaker)] * len(heard.embeddings)
    X = np.concatenate(vectors)
    note = (f"LDA (eigen, Ledoit-Wolf shrinkage) of {len(X)} {encoder} window embeddings of "
            f"{len(groups)} speakers (up to {per_speaker} utterances each, seed {seed})")
    return fit_projection(X, who), note


def save_projection(projection: np.ndarray, path: str | Path, note: str) -> Path:
    """Write a projection (and a note on what it was fitted on) atomically."""
    from emovox.fileio import atomic_write

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle: np.savez would append ".npz" to a name
            np.savez(handle, projection=np.asarray(projection, np.float32),
                     note=np.array(note))

    return atomic_write(path, write)


def read_projection(path: str | Path, size: int = EMBEDDING_SIZE) -> np.ndarray:
    """A projection file, checked: plain arrays only, shape (size, k), finite.

    Raises
    ------
    ValueError
        Unreadable, pickled, or of the wrong shape or values (one line naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            projection = np.asarray(data["projection"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a voice projection file ({error})") from None
    if (projection.ndim != 2 or projection.shape[0] != size
            or not 1 <= projection.shape[1] <= size
            or not np.all(np.isfinite(projection))):
        raise ValueError(f"{path}: a voice projection must be a finite ({size}, k) "
                         f"array, got shape {projection.shape}")
    return projection


def voice_projection(encoder: str = "ge2e", size: int = EMBEDDING_SIZE
                     ) -> np.ndarray | None:
    """The projection diarization applies to a voice encoder's embeddings:
    ``$EMOVOX_VOICE_PROJECTION`` if set (None for ``none``), else the packaged one
    (None if there is none for this encoder). Read once per file.

    Parameters
    ----------
    encoder : str
        The voice encoder's name (``"ge2e"``, ``"campplus"``).
    size : int
        Its embeddings' size (a projection of another size is refused).
    """
    choice = os.environ.get(PROJECTION_ENV_VAR, "").strip()
    if choice.lower() == "none":
        return None
    path = Path(choice) if choice else packaged_projection_path(encoder)
    key = f"{path}:{size}"
    if key not in _LOADED:
        if not choice and not path.is_file():
            _LOADED[key] = None
        else:
            _LOADED[key] = read_projection(path, size)
    return _LOADED[key]


def project(embeddings: np.ndarray, projection: np.ndarray | None) -> np.ndarray:
    """Embeddings in the projection's space (unchanged when there is none)."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if projection is None or not len(embeddings):
        return embeddings
    return embeddings @ projection
