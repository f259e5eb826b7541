"""Live emotion from a stream of audio blocks (the microphone in ``emovox listen``).

:class:`LiveRecognizer` keeps a rolling buffer of the last ``window`` seconds and,
every ``hop`` seconds of audio, classifies it and measures its share of speech. It
consumes blocks of any size from any source, so it runs the same on a microphone,
a file read in pieces or synthetic audio:

>>> live = LiveRecognizer(recognizer, window=2.0, hop=1.0)  # doctest: +SKIP
>>> for block in blocks:  # doctest: +SKIP
...     for row in live.feed(block):
...         print(row["end"], row["emotion"], row["confidence"])

The microphone is read with ``sounddevice`` (optional; it needs the PortAudio
library), imported only by :func:`require_sounddevice`.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from emovox.errors import EmovoxError

if TYPE_CHECKING:
    from rich.console import RenderableType

    from emovox.vad import VadOptions

#: Width of the probability bars of the live display, in characters.
BAR_WIDTH = 24

NO_SOUNDDEVICE = ("emovox listen needs sounddevice: pip install sounddevice "
                  "(and Debian's libportaudio2)")


class ListenError(EmovoxError):
    """The microphone cannot be used (missing package, no input device)."""


class LiveRecognizer:
    """Classify the last ``window`` seconds of a stream every ``hop`` seconds.

    Parameters
    ----------
    recognizer : Recognizer or OnnxRecognizer
        Anything with ``predict_signal(signal, sample_rate)`` and ``classes``.
    window : float
        Seconds of audio each prediction sees.
    hop : float
        Seconds of audio between predictions (``0 < hop <= window``).
    sample_rate : int
        Rate of the blocks fed in Hz.
    vad : {"silero", "energy"} or None
        Detector for the speech indicator (``"silero"`` falls back to ``"energy"``);
        None: every window counts as speech.
    min_speech : float
        Share of speech a window needs for ``speech`` to be True.
    vad_options : VadOptions, optional
        Detector parameters.

    Raises
    ------
    ValueError
        Non-positive ``window`` or ``hop``, ``hop > window``, or a window shorter than
        one sample.
    """

    def __init__(self, recognizer: Any, window: float = 2.0, hop: float = 1.0,
                 sample_rate: int = 16_000, vad: str | None = "silero",
                 min_speech: float = 0.5, vad_options: VadOptions | None = None) -> None:
        from emovox.inference.windows import check_window, window_samples
        from emovox.vad import resolve_vad

        check_window(window, hop, min_speech)
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate!r}")
        self.recognizer = recognizer
        self.engine = recognizer.engine
        self.sample_rate = int(sample_rate)
        self.window = float(window)
        self.hop = float(hop)
        self.window_samples, self.hop_samples = window_samples(window, hop, self.sample_rate)
        self.vad = resolve_vad(vad)
        self.min_speech = float(min_speech)
        self.vad_options = vad_options
        self.samples_seen = 0
        self._next = self.window_samples  # sample count at which the next row is due
        self._buffer = np.zeros(0, dtype=np.float32)
        # This stream's own adaptation state (running statistics under adapt="auto"):
        # the recogniser's other verbs never see it.
        self._adapter = self.engine.adapter_for("stream")

    @property
    def classes(self) -> list[str]:
        """Class names, in the order of the ``probabilities`` of each row."""
        return list(self.recognizer.classes)

    @property
    def seconds(self) -> float:
        """Seconds of audio fed so far."""
        return self.samples_seen / self.sample_rate

    def reset(self) -> None:
        """Forget the audio fed so far (timestamps restart at 0)."""
        self.samples_seen = 0
        self._next = self.window_samples
        self._buffer = np.zeros(0, dtype=np.float32)
        self._adapter = self.engine.adapter_for("stream")

    def feed(self, block: np.ndarray) -> list[dict[str, Any]]:
        """Add a block of samples; return the rows of the windows it completes.

        Parameters
        ----------
        block : np.ndarray, shape (n,) or (n, channels)
            Samples at :attr:`sample_rate`; channels are averaged.

        Returns
        -------
        list of dict
            One row per window completed (none until ``window`` seconds were fed,
            then one per ``hop``), each with ``start`` and ``end`` (seconds of the
            stream), ``emotion``, ``confidence``, ``probabilities`` (class -> value),
            ``speech`` and ``speech_ratio``. A digitally silent window has
            ``emotion`` None and NaN probabilities.
        """
        samples = np.asarray(block, dtype=np.float32)
        if samples.ndim == 2:
            samples = samples.mean(axis=1)
        elif samples.ndim != 1:
            raise ValueError(f"a block must have shape (n,) or (n, channels), got {samples.shape}")
        rows = []
        while len(samples):
            take = min(len(samples), self._next - self.samples_seen)
            self._buffer = np.concatenate([self._buffer, samples[:take]])[-self.window_samples:]
            self.samples_seen += take
            samples = samples[take:]
            if self.samples_seen == self._next:
                rows.append(self._classify())
                self._next += self.hop_samples
        return rows

    def run(self, blocks: Iterable[np.ndarray] | Callable[[], np.ndarray | None]
            ) -> Iterator[dict[str, Any]]:
        """Feed every block of ``blocks`` and yield the rows as they come.

        Parameters
        ----------
        blocks : iterable of np.ndarray, or callable
            Blocks of samples; a callable is called for each block until it returns
            None.

        Yields
        ------
        dict
            Rows as returned by :meth:`feed`.
        """
        if callable(blocks):
            while (block := blocks()) is not None:
                yield from self.feed(block)
            return
        for block in blocks:
            yield from self.feed(block)

    def _classify(self) -> dict[str, Any]:
        signal = self._buffer
        end = self.samples_seen / self.sample_rate
        row: dict[str, Any] = {"start": round(end - self.window_samples / self.sample_rate, 6),
                               "end": round(end, 6)}
        encoded = self.engine.backend.encode([signal], self.sample_rate)
        if not encoded.usable[0]:  # digital silence (a muted microphone): nothing to classify
            row.update(emotion=None, confidence=float("nan"),
                       probabilities={c: float("nan") for c in self.classes},
                       speech=False, speech_ratio=0.0)
            return row
        index = pd.MultiIndex.from_tuples([("<live>", row["start"], row["end"])],
                                          names=["file", "start", "end"])
        top = self.engine.rows(encoded, index, self._adapter).iloc[0]
        ratio = self._speech_ratio(signal)
        row.update(emotion=str(top["emotion"]), confidence=float(top["confidence"]),
                   probabilities={c: float(top[c]) for c in self.classes},
                   speech=ratio >= self.min_speech, speech_ratio=ratio)
        return row

    def _speech_ratio(self, signal: np.ndarray) -> float:
        if self.vad is None:
            return 1.0
        from emovox.vad import speech_segments

        segments = speech_segments(signal, self.sample_rate, method=self.vad,
                                   options=self.vad_options)
        duration = len(signal) / self.sample_rate
        speech = sum(min(end, duration) - max(start, 0.0) for start, end in segments)
        return round(min(max(speech / duration, 0.0), 1.0), 3)


# ----------------------------------------------------------------------------- display


def render(row: dict[str, Any] | None, classes: list[str], listened: float = 0.0,
           window: float = 2.0) -> RenderableType:
    """The live display of one row: top emotion, confidence, speech, one bar per class.

    Parameters
    ----------
    row : dict or None
        A row of :meth:`LiveRecognizer.feed`; None before the first window is full.
    classes : list of str
        Class names, in display order.
    listened : float
        Seconds of audio heard so far.
    window : float
        Window length in seconds (shown while waiting for the first one).

    Returns
    -------
    rich renderable
    """
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    if row is None:
        return Panel(Text(f"listening... first result after {window:g} s "
                          f"({listened:.1f} s heard)", style="dim"), title="emovox listen")
    if row["emotion"] is None:
        return Panel(Text(f"silence ({row['start']:.1f}-{row['end']:.1f} s)", style="dim"),
                     title="emovox listen", subtitle="Ctrl+C stops")
    speech = Text("● speech", style="bold green") if row["speech"] else Text(
        "○ no speech", style="dim")
    head = Text.assemble((row["emotion"], "bold"), f"  {row['confidence']:.0%}   ", speech,
                         f"  ({row['speech_ratio']:.0%} of the window)   ",
                         (f"{row['start']:.1f}-{row['end']:.1f} s", "dim"))
    bars = Table.grid(padding=(0, 1))
    for name in classes:
        p = row["probabilities"][name]
        filled = round(p * BAR_WIDTH)
        style = "bold cyan" if name == row["emotion"] else "cyan"
        bars.add_row(name, Text("█" * filled + "·" * (BAR_WIDTH - filled), style=style),
                     f"{p:5.1%}")
    grid = Table.grid()
    grid.add_row(head)
    grid.add_row(bars)
    return Panel(grid, title="emovox listen", subtitle="Ctrl+C stops")


# ----------------------------------------------------------------------------- microphone


def require_sounddevice() -> Any:
    """Import ``sounddevice``.

    Raises
    ------
    ListenError
        It is not installed, or PortAudio is missing.
    """
    try:
        import sounddevice
    except (ImportError, OSError):
        raise ListenError(NO_SOUNDDEVICE) from None
    return sounddevice


def input_device(sd: Any, device: int | None = None) -> dict[str, Any]:
    """The description of the input device ``device`` (default input when None).

    Parameters
    ----------
    sd : module
        ``sounddevice``.
    device : int, optional
        Device index (``python -m sounddevice`` lists them).

    Raises
    ------
    ListenError
        No such input device, or none at all.
    """
    try:
        info = dict(sd.query_devices(device, kind="input"))
    except Exception:  # sounddevice raises ValueError or PortAudioError
        info = {}
    if int(info.get("max_input_channels", 0) or 0) < 1:
        which = "no audio input device was found" if device is None else (
            f"audio device {device} is not an input device (or does not exist)")
        raise ListenError(which)
    return info


def microphone_blocks(sd: Any, device: int | None, sample_rate: int, block_seconds: float,
                      seconds: float | None = None) -> Iterator[np.ndarray]:
    """Blocks of mono float32 samples from an input device.

    Parameters
    ----------
    sd : module
        ``sounddevice``.
    device : int, optional
        Input device index; None: the default input.
    sample_rate : int
        Recording rate in Hz.
    block_seconds : float
        Seconds per block.
    seconds : float, optional
        Stop after this many seconds; None: until the consumer stops.

    Yields
    ------
    np.ndarray, shape (n,)
    """
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(data: np.ndarray, frames: int, time: Any, status: Any) -> None:
        blocks.put(data[:, 0].copy())

    total = 0
    limit = None if seconds is None else round(seconds * sample_rate)
    with sd.InputStream(device=device, channels=1, samplerate=sample_rate, dtype="float32",
                        blocksize=max(1, round(block_seconds * sample_rate)),
                        callback=callback):
        while limit is None or total < limit:
            block = blocks.get()
            if limit is not None:
                block = block[:limit - total]
            total += len(block)
            yield block


def listen(recognizer: Any, sd: Any, device: int | None = None, window: float = 2.0,
           hop: float = 1.0, seconds: float | None = None, console: Any = None) -> int:
    """Classify the microphone live in a rich display until ``seconds`` or Ctrl+C.

    Parameters
    ----------
    recognizer : Recognizer or OnnxRecognizer
        The model.
    sd : module
        ``sounddevice`` (from :func:`require_sounddevice`).
    device : int, optional
        Input device index.
    window, hop : float
        Window length and step in seconds.
    seconds : float, optional
        Stop after this many seconds of audio.
    console : rich.console.Console, optional
        Where to draw.

    Returns
    -------
    int
        Number of windows classified.
    """
    from rich.live import Live

    info = input_device(sd, device)
    rate = 16_000
    try:
        sd.check_input_settings(device=device, channels=1, samplerate=rate, dtype="float32")
    except Exception:  # the device cannot record at 16 kHz: use its own rate
        rate = int(info.get("default_samplerate") or 48_000)
    live = LiveRecognizer(recognizer, window=window, hop=hop, sample_rate=rate)
    count = 0
    with Live(render(None, live.classes, 0.0, window), console=console,
              refresh_per_second=8) as display:
        try:
            for block in microphone_blocks(sd, device, rate, min(hop, 0.1), seconds):
                for row in live.feed(block):
                    count += 1
                    display.update(render(row, live.classes, live.seconds, window))
                if count == 0:
                    display.update(render(None, live.classes, live.seconds, window))
        except KeyboardInterrupt:
            pass
    return count
