"""Conversations: who spoke when, and how each speaker felt (issue 14).

Builds two- and three-speaker conversations from corpus utterances in a temporary
folder (never kept): the speakers of one conversation come from one corpus; turns of
1-8 s alternate between them (a turn is one speaker's utterances of one emotion, their
silences trimmed, cut to the drawn length), separated by pauses of 0.1-1.0 s or
overlapping the previous turn by 0.2-0.5 s (a quarter of the changes), over a low
noise floor. Each turn's speaker and emotion are known; its reference speech is what
the silero detector finds in the turn alone (the files' own silences and noise are
nobody's speech).

Printed, in one run:

- the diarization error rate (pyannote.metrics, 0.25 s collar, overlap scored) of
  :func:`emovox.diarization.diarize` with the number of speakers found (``auto``) and
  given, and how often ``auto`` found the right number;
- per-turn emotion UAR (the mean probabilities of the timeline windows centred in the
  turn) of the default bundle's timeline with per-speaker adaptation
  (``speakers="auto"``: each speaker's statistics from all of their windows, the
  default in a conversation), with recording-wide adaptation from all of the
  recording's windows (``adapt="batch"``), both again with running statistics
  (``adapt="stream"``; the default for one voice), unadapted, and of the turns
  predicted as separate files, each speaker's turns adapted together (their own
  speaker's statistics, the speaker known);
- the time of the diarization pass against the plain timeline of the same recording.
  The voice pass runs in a thread beside the emotion pass (two cores, when the
  machine has them); pinned to one core (``taskset -c 0 python ...``) the ratio is the
  whole cost of telling voices apart.

The default bundle was trained on these corpora's speakers: the UARs compare
adaptation schemes on the same model, they are not accuracy estimates for new voices.
With ``--unseen`` they are: a third of every corpus's speakers (drawn with the seed)
is held out, conversations are built from them only, and the model is the default
bundle's recipe (``recipes/default_bundle.yaml``) trained on the other speakers in the
temporary folder, so every voice in a conversation is new to it (as for a user). The
voices are told apart by CAM++ (``--voices campplus``, the default; trained on other
speakers than these corpora's) or GE2E (``--voices ge2e``), whose voice projection
(:mod:`emovox.voice_projection`, the packaged one fitted on all of these corpora's
speakers) is refitted on the other speakers under ``--unseen``.

With ``--diarization-only`` the same conversations (the same draws: a seed gives the
same conversations as the full run) are only diarized, with the projection refitted
under ``--unseen`` but no model trained: the DER and count rows, in a few minutes.
``--counts 2 3 4`` adds four-speaker conversations (after the others: the two- and
three-speaker ones stay the same). ``--across-corpora`` draws each speaker of a
conversation from another corpus (another studio, microphone and room, as the two ends
of a call: the case where one voice's statistics differ most from the recording's).
Several seeds (``--seed 0 4 5 6``) print a table per seed, then one pooled over all of
their conversations (the held-out figures of docs/RESULTS.md pool seeds 0 and 4-6).

``--within 2-4`` also diarizes each conversation with the count found within that
range (``speakers="2-4"``, for users who know roughly how many speak) and prints its DER.

Usage: ``python benchmarks/conversations.py [--per-count 4] [--minutes 2] [--unseen]
[--diarization-only] [--counts 2 3] [--voices campplus|ge2e] [--seed 0 [4 ...]]
[--within MIN-MAX]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from common import add_corpora_argument, corpora_root
from sklearn.metrics import balanced_accuracy_score

from emovox.cores import usable_cores
from emovox.diarization import DEFAULT_VOICES
from emovox.speakers import VOICE_ENCODERS

RATE = 16_000
CLASSES = ("angry", "disgust", "fearful", "happy", "neutral", "sad")
SOURCES = ("crema-d/AudioWAV", "ravdess/Audio_Speech_Actors_01-24", "emodb/wav")
TURN_SECONDS = (1.0, 8.0)
PAUSE_SECONDS = (0.1, 1.0)
OVERLAP_SECONDS = (0.2, 0.5)
OVERLAP_SHARE = 0.25
NOISE_LEVEL = 1e-3
COLLAR = 0.25


@dataclass
class Turn:
    """One speaker's turn in a built conversation."""

    start: float
    end: float
    speaker: str
    emotion: str
    samples: np.ndarray
    speech: list[tuple[float, float]]  # where the turn is speech, in the conversation


def trimmed(path: str) -> np.ndarray:
    """An utterance without its leading and trailing silence."""
    import librosa

    from emovox.audio import load_audio

    signal = load_audio(path, RATE)
    _, (a, b) = librosa.effects.trim(signal, top_db=35, frame_length=512, hop_length=128)
    return signal[a:b]


def build(table: pd.DataFrame, n_speakers: int, seconds: float,
          rng: np.random.Generator, across: bool = False) -> tuple[np.ndarray, list[Turn]]:
    """A conversation of ``n_speakers`` speakers of ``table`` lasting about ``seconds``;
    with ``across``, each speaker from another corpus of ``table``."""
    from emovox.vad import speech_segments

    if across:  # one speaker of each of n corpora: n studios, microphones, rooms
        corpora = rng.choice(sorted(table["corpus"].unique()), n_speakers, replace=False)
        voices = np.array([rng.choice(sorted(table.loc[table["corpus"] == c, "speaker"]
                                             .unique())) for c in corpora])
    else:
        voices = rng.choice(sorted(table["speaker"].unique()), n_speakers, replace=False)
    pools = {v: table[table["speaker"] == v] for v in voices}
    turns: list[Turn] = []
    cursor, current = 0.0, None
    while cursor < seconds:
        speaker = rng.choice([v for v in voices if v != current])
        pool = pools[speaker]
        emotion = rng.choice(sorted(pool["emotion"].unique()))
        files = pool[pool["emotion"] == emotion]["path"].to_numpy()
        target = rng.uniform(*TURN_SECONDS)
        pieces, length = [], 0
        for path in rng.permutation(files):
            piece = trimmed(path)
            pieces += [piece, np.zeros(round(0.15 * RATE), np.float32)]
            length += piece.size
            if length >= target * RATE:
                break
        speech = np.concatenate(pieces[:-1])[: round(target * RATE)]
        if speech.size < RATE:
            continue
        if turns and rng.random() < OVERLAP_SHARE:
            start = max(turns[-1].start + 0.5, cursor - rng.uniform(*OVERLAP_SECONDS))
        else:
            start = cursor + (rng.uniform(*PAUSE_SECONDS) if turns else 0.5)
        # The reference speech: the detector on the turn alone (the corpus files carry
        # silence and noise that are nobody's speech), as simulated-conversation
        # benchmarks do.
        spans = speech_segments(speech, RATE) or [(0.0, speech.size / RATE)]
        turns.append(Turn(round(start, 3), round(start + speech.size / RATE, 3),
                          str(speaker), str(emotion), speech,
                          [(round(start + a, 3), round(start + b, 3)) for a, b in spans]))
        cursor, current = turns[-1].end, speaker
    total = round((cursor + 0.5) * RATE)
    mix = NOISE_LEVEL * rng.standard_normal(total)
    for turn in turns:
        a = round(turn.start * RATE)
        mix[a:a + turn.samples.size] += turn.samples
    return np.clip(mix, -1, 1).astype(np.float32), turns


def der(turns: list[Turn], hypothesis: list[tuple[float, float, str]]) -> float:
    """Diarization error rate of ``hypothesis`` against the built turns."""
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    reference, found = Annotation(), Annotation()
    for k, (a, b, speaker) in enumerate((a, b, t.speaker) for t in turns for a, b in t.speech):
        reference[Segment(a, b), k] = speaker
    for k, (a, b, speaker) in enumerate(hypothesis):
        found[Segment(a, b), k] = speaker
    return float(DiarizationErrorRate(collar=COLLAR, skip_overlap=False)(reference, found))


def turn_labels(frame: pd.DataFrame, turns: list[Turn], classes: list[str]) -> list[str]:
    """Per turn, the class of the mean probabilities of the windows centred in it
    (the window overlapping it most when none is)."""
    voiced = frame[frame["emotion"].notna()]
    starts = voiced.index.get_level_values("start").to_numpy(float)
    ends = voiced.index.get_level_values("end").to_numpy(float)
    centres = (starts + ends) / 2
    proba = voiced[classes].to_numpy(float)
    out = []
    for turn in turns:
        inside = (centres >= turn.start) & (centres < turn.end)
        if not inside.any():
            overlap = np.minimum(ends, turn.end) - np.maximum(starts, turn.start)
            inside = overlap == overlap.max()
        out.append(classes[int(np.argmax(proba[inside].mean(axis=0)))])
    return out


def held_out(table: pd.DataFrame, rng: np.random.Generator) -> list[str]:
    """A third of a corpus's speakers (at least three: a conversation needs them)."""
    speakers = sorted(table["speaker"].astype(str).unique())
    return [str(s) for s in rng.permutation(speakers)[: max(3, len(speakers) // 3)]]


def train_without(root: Path, speakers: set[str], out: Path) -> Path:
    """The default bundle's recipe trained without ``speakers``; returns the bundle."""
    from emovox.bundle import save_bundle
    from emovox.config import load_config
    from emovox.corpora import load_corpus
    from emovox.experiment import train_bundle

    os.environ["EMOVOX_CORPORA"] = str(root)
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "default_bundle.yaml"
    config = load_config(recipe)
    everyone = {str(s) for corpus in config.corpora
                for s in load_corpus(corpus.path).table["speaker"].astype(str)}
    config = config.model_copy(update={"subset": {"speaker": sorted(everyone - speakers)}})
    bundle, _ = train_bundle(config, evaluate=False, progress=sys.stderr.isatty())
    print(f"model: {recipe.name} trained without the {len(speakers)} conversation "
          f"speakers ({len(everyone - speakers)} others)", file=sys.stderr, flush=True)
    return save_bundle(bundle, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_argument(parser)
    parser.add_argument("--per-count", type=int, default=4,
                        help="conversations per speaker count")
    parser.add_argument("--counts", type=int, nargs="+", default=[2, 3],
                        help="numbers of speakers of the conversations (default: 2 3)")
    parser.add_argument("--minutes", type=float, default=2.0, help="length of each")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="seed of the draws; several: a table per seed, then one "
                             "pooled over all of their conversations")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--unseen", action="store_true",
                        help="build conversations from held-out speakers and train the "
                             "default recipe on the others (voices the model never heard)")
    parser.add_argument("--across-corpora", action="store_true",
                        help="each speaker of a conversation from another corpus (other "
                             "studio, microphone and room, as the two ends of a call)")
    parser.add_argument("--diarization-only", action="store_true",
                        help="the same conversations, diarization only (no emotion model "
                             "is trained or run)")
    parser.add_argument("--voices", default=None, choices=VOICE_ENCODERS,
                        help=f"voice encoder of the diarization (default: {DEFAULT_VOICES})")
    parser.add_argument("--within", default=None, metavar="MIN-MAX",
                        help="also diarize with the number of speakers found within this "
                             "range (speakers='2-4'), and print its DER")
    args = parser.parse_args(argv)
    if args.within is not None:
        from emovox.diarization import check_speakers

        args.within = str(check_speakers(args.within))
    root = corpora_root(args)
    voices = args.voices or DEFAULT_VOICES

    import torch

    from emovox.corpora import load_corpus

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    tables = [load_corpus(root / s).table for s in SOURCES]
    tables = [t[t["emotion"].isin(CLASSES)] for t in tables]
    pooled = []
    for seed in args.seed:
        rows = run_seed(root, tables, args, seed, voices)
        report(rows, args, voices, f"seed {seed}")
        pooled += rows
    if len(args.seed) > 1:
        report(pooled, args, voices, "pooled over seeds " + ", ".join(map(str, args.seed)))


def run_seed(root: Path, tables: list[pd.DataFrame], args: argparse.Namespace, seed: int,
             voices: str) -> list[dict]:
    """Build the conversations of one seed from the corpora's ``tables`` (their six
    classes) and measure them: a dict per conversation."""
    from emovox.diarization import diarize
    from emovox.recognizer import Recognizer
    from emovox.voice_projection import (
        PROJECTION_ENV_VAR,
        fit_projection_on_corpora,
        save_projection,
    )

    # One generator for every draw, in the same order with or without
    # --diarization-only: a seed gives the same conversations either way.
    rng = np.random.default_rng(seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="emovox-conversations-") as tmp:
        model = None
        if args.unseen:
            held = [held_out(t, rng) for t in tables]
            others = [t[~t["speaker"].isin(h)] for t, h in zip(tables, held, strict=True)]
            tables = [t[t["speaker"].isin(h)] for t, h in zip(tables, held, strict=True)]
            if not args.diarization_only:
                model = train_without(root, {s for h in held for s in h},
                                      Path(tmp) / "model")
            if voices == "ge2e":  # its projection too, fitted on the other speakers only
                projection, note = fit_projection_on_corpora(others)
                os.environ[PROJECTION_ENV_VAR] = str(save_projection(
                    projection, Path(tmp) / "voice_lda.npz", note))
                print(f"voice projection: {note}", file=sys.stderr, flush=True)
        if not args.diarization_only:
            adapted, plain = Recognizer(model), Recognizer(model, adapt="none")
            whole = Recognizer(model, adapt="batch")  # statistics of the whole recording
            streamed = Recognizer(model, adapt="stream")  # running statistics
            classes = adapted.classes
        for n_speakers in args.counts:
            # Corpora with enough (held-out) speakers, in turn: all of them for two and
            # three speakers; EmoDB's three held out are too few for four.
            usable = ([pd.concat(tables)] if args.across_corpora
                      else [t for t in tables if t["speaker"].nunique() >= n_speakers])
            for k in range(args.per_count):
                table = usable[k % len(usable)]
                signal, turns = build(table, n_speakers, args.minutes * 60, rng,
                                      args.across_corpora)
                path = Path(tmp) / f"conversation-{n_speakers}-{k}.flac"
                sf.write(path, signal, RATE, subtype="PCM_16")
                found = diarize(path, speakers="auto", encoder=voices)
                given = diarize(path, speakers=n_speakers, encoder=voices)
                within = (diarize(path, speakers=args.within, encoder=voices)
                          if args.within else None)
                rows.append({
                    "speakers": n_speakers,
                    "corpus": "+".join(sorted(table.loc[table["speaker"].isin(
                        {t.speaker for t in turns}), "corpus"].astype(str).unique())),
                    "seconds": len(signal) / RATE, "turns": len(turns),
                    "der_auto": der(turns, found.turns), "der_given": der(turns, given.turns),
                    "found": len(found.speakers), "diarization_s": given.seconds,
                    **({"der_within": der(turns, within.turns)} if within else {}),
                })
                r = rows[-1]
                said = (f"{n_speakers} speakers, {r['corpus']}, {r['seconds']:.0f} s, "
                        f"{r['turns']} turns: DER auto {r['der_auto']:.3f} "
                        f"(found {r['found']}), given {r['der_given']:.3f}")
                if args.diarization_only:
                    print(f"{said}; diarization {r['diarization_s']:.1f} s",
                          file=sys.stderr, flush=True)
                    continue
                began = time.perf_counter()
                wide = adapted.predict_timeline(path)
                plain_seconds = time.perf_counter() - began
                began = time.perf_counter()
                per_speaker = adapted.predict_timeline(path, speakers="auto", voices=voices)
                speaker_seconds = time.perf_counter() - began
                unadapted = plain.predict_timeline(path)
                running_speaker = streamed.predict_timeline(path, speakers="auto",
                                                           voices=voices)
                whole_wide = whole.predict_timeline(path)
                # Oracle: each turn its own file, each speaker's turns adapted together.
                alone = {}
                for speaker in sorted({t.speaker for t in turns}):
                    mine = [i for i, t in enumerate(turns) if t.speaker == speaker]
                    files = []
                    for i in mine:
                        files.append(str(Path(tmp) / f"turn-{n_speakers}-{k}-{i}.flac"))
                        sf.write(files[-1], turns[i].samples, RATE, subtype="PCM_16")
                    result = adapted.predict_files(files, progress=False)
                    for i, file in zip(mine, files, strict=True):
                        alone[i] = str(result.xs(file, level="file")["emotion"].iloc[0])
                r.update({
                    "diarization_s": per_speaker.attrs["diarization_seconds"],
                    "timeline_s": plain_seconds, "speaker_timeline_s": speaker_seconds,
                    "truth": [t.emotion for t in turns],
                    "per_speaker": turn_labels(per_speaker, turns, classes),
                    "recording": turn_labels(wide, turns, classes),
                    "unadapted": turn_labels(unadapted, turns, classes),
                    "running_speaker": turn_labels(running_speaker, turns, classes),
                    "whole_wide": turn_labels(whole_wide, turns, classes),
                    "separate": [alone[i] for i in range(len(turns))],
                })
                print(f"{said}; diarization {r['diarization_s']:.1f} s, "
                      f"timeline {r['timeline_s']:.1f} s", file=sys.stderr, flush=True)
    return rows


def report(rows: list[dict], args: argparse.Namespace, voices: str, seeds: str) -> None:
    """Print the summary of every conversation count (diarization rows only with
    ``--diarization-only``) of ``rows``, drawn as ``seeds`` says."""
    per_count = len(rows) // max(len(args.counts), 1)
    print(f"conversations: {per_count} per speaker count, ~{args.minutes:g} min each, "
          + ("each speaker from another corpus (--across-corpora)" if args.across_corpora
             else "speakers of one corpus each (CREMA-D, RAVDESS speech, EmoDB in turn)")
          + f", {seeds}, {args.threads} thread(s) on {usable_cores()} core(s), "
          + f"voices {voices}; "
          + ("diarization only" if args.diarization_only else "model: ")
          + ("" if args.diarization_only
             else "default recipe trained without these speakers (--unseen)" if args.unseen
             else "the packaged default (trained on these speakers)")
          + (", held-out speakers (--unseen)" if args.diarization_only and args.unseen
             else ""))
    print(f"{'':36}" + "".join(f"{f'{n} speakers':>14}" for n in args.counts))

    def line(name: str, values: list[str]) -> None:
        print(f"{name:36}" + "".join(f"{v:>14}" for v in values))

    groups = [[r for r in rows if r["speakers"] == n] for n in args.counts]
    diarization_rows(groups, line)
    if args.within:
        line(f"DER, speakers found within {args.within}",
             [f"{np.mean([r['der_within'] for r in g]):.3f}" for g in groups])
    if args.diarization_only:
        return
    for key, name in (("per_speaker", "turn UAR, per-speaker (whole rec.)"),
                      ("whole_wide", "turn UAR, recording-wide (whole rec.)"),
                      ("running_speaker", "turn UAR, per-speaker, running"),
                      ("recording", "turn UAR, recording-wide, running"),
                      ("unadapted", "turn UAR, unadapted"),
                      ("separate", "turn UAR, separate files, own spk")):
        values = []
        for g in groups:
            truth = [label for r in g for label in r["truth"]]
            predicted = [label for r in g for label in r[key]]
            values.append(f"{balanced_accuracy_score(truth, predicted):.3f}")
        line(name, values)
    ratio = [np.sum([r["diarization_s"] for r in g]) / np.sum([r["timeline_s"] for r in g])
             for g in groups]
    line("diarization / plain timeline time", [f"{100 * v:.0f} %" for v in ratio])
    total = [np.sum([r["speaker_timeline_s"] for r in g]) / np.sum([r["timeline_s"] for r in g])
             for g in groups]
    line("timeline with speakers / without", [f"{v:.2f}x" for v in total])


def diarization_rows(groups: list[list[dict]],
                     line: Callable[[str, list[str]], None]) -> None:
    """The turns, DER (count found and given) and right-count rows, a column per group."""
    line("turns (total)", [str(sum(r["turns"] for r in g)) for g in groups])
    line("DER, speakers found (auto)", [f"{np.mean([r['der_auto'] for r in g]):.3f}"
                                        for g in groups])
    line("DER, number of speakers given", [f"{np.mean([r['der_given'] for r in g]):.3f}"
                                           for g in groups])
    line("auto found the right number", [f"{sum(r['found'] == r['speakers'] for r in g)}"
                                         f"/{len(g)}" for g in groups])


if __name__ == "__main__":
    main()
