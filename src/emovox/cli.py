"""The ``emovox`` command: a thin shell over the library that parses, calls and prints."""

from __future__ import annotations

import contextlib
import json
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from emovox.adaptation import MIN_ADAPT_VECTORS
from emovox.errors import EmovoxError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="emovox: speech emotion recognition with speaker-independent evaluation.")
corpus_app = typer.Typer(no_args_is_help=True, help="Inspect emotional speech corpora.")
app.add_typer(corpus_app, name="corpus")
console = Console()
if not console.is_terminal:  # piped or captured: don't squeeze tables into 80 columns
    console = Console(width=200)
errors = Console(stderr=True)
if not errors.is_terminal:  # the same for tables printed on stderr (speaker summaries)
    errors = Console(stderr=True, width=200)

Overrides = Annotated[list[str] | None, typer.Argument(
    help="Config overrides as dotted.key=value, e.g. model.params.C=0.1")]
#: The model option every verb shares: a packaged tier's name or a folder.
ModelOption = Annotated[Path | None, typer.Option(
    "--model", "--bundle", "-m",
    help="'default' (the packaged model), 'fast' (half the encoder, int8 weights: "
         "about 2.5x faster on timelines, a few points less accurate), 'accurate' (two "
         "encoders, int8 weights: more accurate, about as fast; `emovox models` lists "
         "them) or a model bundle / ONNX export folder")]


#: Exit status when some inputs could not be predicted (each is listed on stderr).
EXIT_FAILED = 1
#: Exit status of usage errors: bad options or arguments, an unusable model.
EXIT_USAGE = 2
#: Most connections ``emovox serve`` holds open at once (503 beyond).
SERVE_CONNECTIONS = 64


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=EXIT_USAGE)


def _reason(path: str, reason: str) -> str:
    return reason.removeprefix(f"{path}: ")


def _print_failures(failures: list[tuple[str, str]], what: str = "files") -> None:
    if not failures:
        return
    errors.print(f"[yellow]{len(failures)} {what} failed:[/]")
    for path, reason in failures:
        errors.print(escape(f"  {path}: {_reason(path, reason)}"), highlight=False,
                     soft_wrap=True)


#: How a skipped entry of a folder is counted in its summary line.
SKIP_NOUNS = {"not audio": ("file that is not audio", "files that are not audio"),
              "symlink loop": ("symlink loop", "symlink loops"),
              "broken symlink": ("broken symlink", "broken symlinks"),
              "unreadable folder": ("unreadable folder", "unreadable folders"),
              "not a regular file": ("special file", "special files")}


def _print_skipped(folder: Path, skipped: list[tuple[Path, str]], shown: int = 8) -> None:
    """One summary line per reason, naming the entries (relative to ``folder``)."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in skipped:
        name = str(path.relative_to(folder)) if path.is_relative_to(folder) else str(path)
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more"
                                             if len(names) > shown else "")
        noun = SKIP_NOUNS.get(reason, (reason, reason))[len(names) > 1]
        errors.print(f"[yellow]{escape(str(folder))}: skipped {len(names)} {noun}:[/] "
                     f"{escape(listed)}",
                     highlight=False, soft_wrap=True)


def _gather_inputs(items: list[Path]) -> tuple[list[str], list[str]]:
    """The files to predict: files as given, folders listed by ``list_audio_files``.

    Returns the paths and one problem per folder that holds no audio; what each
    folder skipped is printed as it is listed.
    """
    from emovox.corpora.base import list_audio_files

    paths: list[str] = []
    problems: list[str] = []
    for item in items:
        if not item.is_dir():
            paths.append(str(item))
            continue
        listing = list_audio_files(item)
        _print_skipped(item, listing.skipped)
        paths += [str(path) for path in listing.files]
        if not listing.files:
            problems.append(f"no audio files in {item}")
    return paths, problems


def _output_format(requested: str | None, output: Path | None) -> str:
    """The format to write: ``--format``, else what the ``--output`` extension says.

    A ``--format`` that contradicts a .csv or .json ``--output`` is a usage error.
    """
    formats = ("table", "csv", "json", "parquet")
    if requested is not None and requested not in formats:
        _fail(f"--format must be table, csv, json or parquet, not {requested!r}")
    if requested == "parquet" and output is None:
        _fail("--format parquet writes a folder: give it with --output")
    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    implied = suffix if suffix in formats[1:] else None
    if requested is not None and implied is not None and requested != implied:
        _fail(f"--format {requested} contradicts --output {output.name} (a .{implied} file); "
              "drop --format or rename the output")
    return requested or implied or "table"


def _calibration_files(values: list[Path] | None) -> list[Path]:
    """``--calibrate`` values, each a file or a comma-separated list of files."""
    files: list[Path] = []
    for value in values or []:
        if value.exists() or "," not in str(value):
            files.append(value)
        else:
            files += [Path(part) for part in str(value).split(",") if part.strip()]
    return files


def _calibrate(recognizer, files: list[Path]) -> None:
    """Calibrate on ``files`` and say whether it took (never claiming it when not)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            used = recognizer.calibrate(files)
        except EmovoxError as error:
            _fail(f"--calibrate: {error}")
    # The recogniser's warnings say what was left out, or why nothing was adapted.
    for warning in caught:
        if issubclass(warning.category, UserWarning):
            errors.print(f"[bold yellow]warning:[/] {escape(str(warning.message))}",
                         highlight=False,
                         soft_wrap=True)
    if recognizer.calibrated:
        what = f"{files[0]} ({used} windows)" if len(files) == 1 else (
            f"{used} of {len(files)} calibration files")
        errors.print(escape(f"adapted to the speaker of {what}"), highlight=False,
                     soft_wrap=True)


COUNT_COLUMNS = {"n_test", "support", "n", "count", "utterances", "speakers"}


def _cell(column: object, value: object, digits: int) -> str:
    if isinstance(value, float):
        if value != value:  # NaN: nothing to show
            return ""
        if str(column) in COUNT_COLUMNS or digits == 0:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _frame_table(frame: pd.DataFrame, title: str | None = None, digits: int = 3) -> Table:
    table = Table(title=title, header_style="bold")
    index_names = [n or "" for n in frame.index.names]
    for name in [*index_names, *map(str, frame.columns)]:
        table.add_column(name, justify="left" if name in {"file", "fold", "class"} else "right")
    for index, row in frame.iterrows():
        index = index if isinstance(index, tuple) else (index,)
        cells = [str(i) for i in index]
        cells += [_cell(column, v, digits) for column, v in row.items()]
        table.add_row(*map(Text, cells))  # Text: a file name is never read as markup
    return table


@app.command()
def predict(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Audio files, folders, glob patterns ('calls/**/*.wav') or manifests (.csv, "
             ".tsv, .parquet with a path column)")] = None,
    bundle: ModelOption = None,
    output_format: Annotated[str | None, typer.Option(
        "--format", "-f", help="table, csv, json or parquet (default: from the --output "
                               "extension, else table)")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write results to this file (.csv, "
                                                     ".json) or Parquet folder (.parquet), "
                                                     "batch by batch")] = None,
    sample: Annotated[bool, typer.Option(help="Predict a synthetic voice sample "
                                              "(a smoke test needing no audio)")] = False,
    jobs: Annotated[int | None, typer.Option(
        help="Workers: local processes (-1: all cores; default: one for a handful of files, "
             "every core from 200 on) or Ray actors (default: the cluster's CPUs)")] = None,
    engine: Annotated[str, typer.Option(
        help="Where files are encoded: local (processes on this machine) or ray (a Ray "
             "cluster: --address, else one started here)")] = "local",
    address: Annotated[str | None, typer.Option(
        help="Ray cluster to join, e.g. 10.0.0.1:6379 (with --engine ray)")] = None,
    group_by: Annotated[str | None, typer.Option(
        help="Manifest column naming each file's speaker (or 'folder'): speaker "
             "adaptation uses each group's own statistics (default: all files together)")
    ] = None,
    path_column: Annotated[str, typer.Option(help="Path column of CSV/Parquet "
                                                  "manifests")] = "path",
    timeline: Annotated[bool, typer.Option(
        "--timeline", help="Emotion over time: windows over the speech (long recordings)")
    ] = False,
    window: Annotated[float, typer.Option(help="Timeline window in seconds")] = 2.0,
    hop: Annotated[float, typer.Option(help="Seconds between timeline windows")] = 1.0,
    vad: Annotated[str, typer.Option(help="Timeline voice activity detector: silero or "
                                          "energy")] = "silero",
    no_vad: Annotated[bool, typer.Option("--no-vad", help="Timeline: classify every "
                                                         "window, speech or not")] = False,
    speakers: Annotated[str | None, typer.Option(
        help="Timeline of a conversation: separate the voices ('auto' finds how many, "
             "'2-4' finds it within a range, or give N), add a speaker column and a "
             "per-speaker summary, adapt per speaker")
    ] = None,
    voices: Annotated[str | None, typer.Option(
        help="With --speakers: the voice encoder that tells them apart, campplus "
             "(default) or ge2e (about twice as fast, less exact)")] = None,
    plot: Annotated[Path | None, typer.Option(
        help="Timeline: save a PNG here (several files: NAME-<file>.png)")] = None,
    resume: Annotated[bool, typer.Option(
        help="Skip files already complete in --output (an interrupted run goes on)")
    ] = False,
    adapt: Annotated[str, typer.Option(
        help="Speaker adaptation of speaker-normalised models: auto (the files predicted "
             "together, or running statistics of a timeline), batch, stream or none")
    ] = "auto",
    calibrate: Annotated[list[Path] | None, typer.Option(
        help=f"A recording of the speaker to adapt to ({MIN_ADAPT_VECTORS + 1} s or more), "
             f"or several files ({MIN_ADAPT_VECTORS} or more): repeat --calibrate or give a comma "
             "list, a.wav,b.wav")] = None,
) -> None:
    """Predict the emotion of audio files (or every audio file in folders).

    Folders are searched recursively and take every file whose content is audio,
    whatever its name; what they skip (other files, symlink loops) is listed.

    With --timeline, long recordings come back as windows over their speech.

    With --output, the format follows its extension (.csv, .json); csv and json are
    written file by file, and --resume skips done files.

    A bad file is reported and the others go on.

    Exit status: 0 when every file was predicted; 1 when some could not be (each
    is listed on stderr with the reason) or a folder held no audio; 2 for usage
    errors (bad options, a --format contradicting the --output extension).
    """
    from emovox.recognizer import Recognizer
    from emovox.timeline import ResultsFile, check_window, timeline_complete
    from emovox.vad import VAD_METHODS

    output_format = _output_format(output_format, output)
    if timeline:
        try:
            check_window(window, hop)
        except ValueError as error:
            _fail(f"--window/--hop: {error}")
        if vad not in VAD_METHODS:
            _fail(f"--vad must be {' or '.join(VAD_METHODS)}, not {vad!r}")
        if speakers is not None:
            from emovox.diarization import check_speakers

            try:
                speakers = check_speakers(speakers)  # type: ignore[assignment]
            except ValueError as error:
                _fail(f"--speakers: {error}")
    if voices is not None:
        from emovox.speakers import VOICE_ENCODERS

        if speakers is None:
            _fail("--voices tells the voices of --speakers apart: add --speakers")
        if voices not in VOICE_ENCODERS:
            _fail(f"--voices must be {' or '.join(VOICE_ENCODERS)}, not {voices!r}")
    if not timeline and speakers is not None:
        _fail("--speakers separates the voices of a timeline: add --timeline")
    if not timeline and plot:
        _fail("--plot draws a timeline: add --timeline")
    if resume and (output is None or output_format == "table"):
        _fail("--resume needs --output with --format csv, json or parquet")
    paths: list[str] = []
    problems: list[str] = []  # inputs that gave nothing to predict (empty folders)
    if not sample:
        if not files:
            _fail("give audio files or folders to predict, or --sample")
        from emovox.scale.inputs import is_glob, is_manifest

        streamed = [str(f) for f in files if is_manifest(f) or is_glob(f)]
        paths, problems = _gather_inputs([f for f in files if str(f) not in streamed])
        if not paths and not streamed:  # nothing to do: say why before loading any model
            _finish([], problems)
        job_options = None  # timelines as a batch job: Ray, manifests, Parquet
        if timeline and (streamed or engine != "local" or output_format == "parquet"):
            if plot is not None or calibrate:
                _fail("--plot and --calibrate go with timelines made here one by one, "
                      "not with a job (--engine ray, a manifest or Parquet output)")
            job_options = {"window": window, "hop": hop, "vad": None if no_vad else vad}
            if speakers is not None:
                job_options.update(speakers=speakers, voices=voices)
        if job_options is not None or (not timeline and (
                streamed or engine != "local" or output_format == "parquet"
                or (output is not None and output_format != "table"))):
            _predict_job(paths, streamed, problems, bundle=bundle, output=output,
                         output_format=output_format, jobs=jobs, engine=engine,
                         address=address, adapt=adapt, group_by=group_by,
                         path_column=path_column, resume=resume, calibrate=calibrate,
                         timeline_options=job_options)
            return
    if engine != "local":
        _fail("--engine ray runs files (not --sample)")
    if jobs is None:
        from emovox.scale.runner import auto_jobs

        jobs = auto_jobs(len(paths))
    recognizer = Recognizer(bundle, n_jobs=jobs, adapt=adapt)  # checks --adapt
    if calibrate:
        _calibrate(recognizer, _calibration_files(calibrate))
        if paths:  # what is predicted, as opposed to calibrated on
            errors.print(escape(f"predicting {len(paths)} file(s): "
                                + ", ".join(Path(p).name for p in paths[:8])
                                + (" ..." if len(paths) > 8 else "")),
                         highlight=False, soft_wrap=True)
    options = {"window": window, "hop": hop, "vad": None if no_vad else vad}
    if speakers is not None:
        options.update(speakers=speakers, voices=voices)
    columns = ["file", "start", "end", "emotion", "confidence", *recognizer.classes]
    columns += ["speech", "speech_ratio"] if timeline else ["basis"]
    columns += ["speaker"] if speakers is not None else []
    writer = None
    if output and output_format != "table":
        try:
            writer = ResultsFile(output, output_format, columns, resume=resume,
                                 complete=timeline_complete if timeline else None)
        except (ValueError, OSError) as error:
            _fail(str(error))
    frames: list[pd.DataFrame] = []
    failures: list[tuple[str, str]] = []
    skipped = 0
    if sample:
        from emovox.synth import synth_voice  # scipy.signal: only when asked for

        signal = synth_voice(2.5)
        frames.append(recognizer.predict_timeline(signal, sample_rate=16000,
                                                  name="<synthetic voice>", **options)
                      if timeline else
                      recognizer.predict_signal(signal, 16000, name="<synthetic voice>"))
        if plot is not None:
            from emovox.timeline import plot_timeline

            plot_timeline(frames[0], plot)
    else:
        todo = [p for p in paths if writer is None or not writer.is_done(p)]
        skipped = len(paths) - len(todo)
        if timeline:
            frames, failures = _predict_timelines(recognizer, todo, options, writer, plot,
                                                  single=len(paths) == 1)
        elif writer is None:
            frames = [recognizer.predict_files(todo, progress=sys.stderr.isatty())]
            failures = frames[0].attrs.get("failures", [])
        else:  # in batches, each written as soon as it is done
            if (recognizer.adapter is not None and adapt in ("auto", "batch")
                    and not recognizer.calibrated and todo):
                # Statistics of the whole input (done files too), so batches and a
                # resumed run adapt exactly as one call over every file would. Too
                # few files fix nothing, as one batch of them would not adapt either.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    recognizer.adapt_to_files(paths, progress=sys.stderr.isatty())
            for start in range(0, len(todo), 32):
                batch = todo[start:start + 32]
                try:
                    frame = recognizer.predict_files(batch, progress=False)
                except Exception as error:  # never lose the rest of a long run
                    failures += [(p, f"{type(error).__name__}: {error}") for p in batch]
                    continue
                failures += frame.attrs.get("failures", [])
                writer.add(frame)
    if writer is not None:
        for frame in frames:
            writer.add(frame)
        writer.close()
        errors.print(escape(f"{writer.rows_written} row(s) written to {output}"
                            + (f"; {skipped} files already done, skipped" if skipped
                               else "")), highlight=False, soft_wrap=True)
        _finish(failures, problems)
        return
    nonempty = [f for f in frames if len(f)]
    frame = pd.concat(nonempty) if nonempty else frames[0] if frames else pd.DataFrame(
        columns=columns).set_index(["file", "start", "end"])
    flat = frame.reset_index()
    if output_format == "table":
        shown = frame.copy()
        if timeline:
            shown["emotion"] = shown["emotion"].fillna("-")
        names = {p: Path(p).name for p in shown.index.levels[0]}
        if len(shown) and len(set(names.values())) == len(names):  # else paths: a/x, b/x
            shown.index = shown.index.set_levels([shown.index.levels[0].map(names),
                                                  *shown.index.levels[1:]])
        table = _frame_table(shown, title=f"emotion ({recognizer.labels.name} model)")
        if output is None:
            console.print(table)
        else:
            with output.open("w") as handle:
                Console(file=handle, width=200).print(table)
            errors.print(escape(f"{len(shown)} row(s) written to {output} as a table"),
                         highlight=False, soft_wrap=True)
    else:
        text = (flat.to_csv(index=False, float_format="%.4f") if output_format == "csv"
                else json.dumps(json.loads(flat.to_json(orient="records", double_precision=4)),
                                indent=2) + "\n")
        sys.stdout.write(text)
    _finish(failures, problems)


def _predict_job(paths: list[str], streamed: list[str], problems: list[str], *,
                 bundle: Path | None, output: Path | None, output_format: str,
                 jobs: int | None, engine: str, address: str | None, adapt: str,
                 group_by: str | None, path_column: str, resume: bool,
                 calibrate: list[Path] | None,
                 timeline_options: dict[str, Any] | None = None) -> None:
    """Whole-file predictions (or timelines, given their options) as a batch job
    (emovox.scale): local or Ray workers, written batch by batch, resumable; a table
    is printed from a temporary output."""
    import tempfile

    from emovox.scale.inputs import iter_items, manifest_rows
    from emovox.scale.runner import read_results, run_job, run_timelines

    total = None
    if not any("*" in s or "?" in s or "[" in s for s in streamed):
        try:
            total = len(paths) + sum(manifest_rows(s) or 0 for s in streamed)
        except OSError as error:
            _fail(str(error))
    setup = None
    if calibrate:
        def setup(recognizer) -> None:
            _calibrate(recognizer, _calibration_files(calibrate))

    with tempfile.TemporaryDirectory(prefix="emovox-") as scratch:
        target = output if output is not None and output_format != "table" else (
            Path(scratch) / "results.parquet")
        fmt = output_format if output_format != "table" else "parquet"
        items = iter_items(streamed, path_column, listed=paths)
        try:
            if timeline_options is not None:
                summary = run_timelines(items, target, fmt, options=timeline_options,
                                        model=bundle, engine=engine, jobs=jobs,
                                        address=address, adapt=adapt, resume=resume,
                                        total=total, progress=sys.stderr.isatty())
            else:
                summary = run_job(items, target, fmt, model=bundle, engine=engine, jobs=jobs,
                                  address=address, adapt=adapt, group_by=group_by,
                                  resume=resume, total=total, progress=sys.stderr.isatty(),
                                  setup=setup)
        except (ValueError, OSError) as error:
            _fail(str(error))
        if target == output:
            done = summary.done_before
            errors.print(escape(
                f"{summary.rows_written} row(s) written to {output}"
                + (f"; {done} files already done, skipped" if done else "")
                + f" ({summary.encoded} files in {summary.seconds:.1f} s on "
                  f"{summary.workers} {engine} worker(s)"
                + (f", {summary.duplicates} repeated inputs skipped" if summary.duplicates
                   else "") + ")"), highlight=False, soft_wrap=True)
        else:
            frame = read_results(target, "parquet")
            if len(frame):
                frame = frame.set_index(["file", "start", "end"])
                console.print(_frame_table(frame, title="emotion"))
    _finish(summary.failures, problems)


def _finish(failures: list[tuple[str, str]], problems: list[str]) -> None:
    """List failed files and empty inputs on stderr; exit with EXIT_FAILED if any."""
    _print_failures(failures)
    for problem in problems:
        errors.print(f"[bold red]error:[/] {escape(problem)}", highlight=False,
                     soft_wrap=True)
    if failures or problems:
        raise typer.Exit(code=EXIT_FAILED)


def _load_voices(voices: str | None) -> None:
    """Load the voice encoder up front under a spinner: its first use builds its ONNX
    graphs into the cache (10-20 s, once), which would otherwise look like a hang."""
    from emovox.diarization import DEFAULT_VOICES
    from emovox.speakers import voice_encoder

    # A failure here is reported by each recording on its own.
    with errors.status("loading the voice encoder (the first time builds it, about "
                       "20 s)"), contextlib.suppress(EmovoxError):
        voice_encoder(voices or DEFAULT_VOICES)


def _predict_timelines(recognizer, paths: list[str], options: dict,
                       writer, plot: Path | None,
                       single: bool) -> tuple[list[pd.DataFrame], list[tuple[str, str]]]:
    """Timelines of ``paths`` one by one: written (or kept) and plotted; failures listed."""
    from emovox.timeline import plot_timeline

    frames: list[pd.DataFrame] = []
    failures: list[tuple[str, str]] = []
    plotted: set[Path] = set()
    if options.get("speakers") is not None and sys.stderr.isatty():
        _load_voices(options.get("voices"))
    for number, path in enumerate(paths, 1):
        if sys.stderr.isatty():
            errors.print(escape(f"timeline {number}/{len(paths)}: {path}"), highlight=False)
        try:
            frame = recognizer.predict_timeline(path, progress=sys.stderr.isatty(),
                                                **options)
        except Exception as error:  # a bad file never stops the batch
            reason = str(error) if isinstance(error, EmovoxError) else (
                f"{type(error).__name__}: {error}")
            failures.append((path, reason))
            continue
        if writer is not None:
            writer.add(frame)
        else:
            frames.append(frame)
        if "speaker" in frame.columns:  # a conversation: how each speaker felt
            _print_speakers(frame, path)
        if plot is not None and len(frame):
            target = plot if single else plot.with_name(
                f"{plot.stem}-{Path(path).stem}{plot.suffix or '.png'}")
            while target in plotted:
                target = target.with_name(f"{target.stem}_{len(plotted)}{target.suffix}")
            plotted.add(target)
            plot_timeline(frame, target)
    return frames, failures

def _print_speakers(frame: pd.DataFrame, path: str) -> None:
    """The per-speaker summary of a conversation's timeline, on stderr."""
    from emovox.conversation import speaker_summary, strongest_moments

    summary = speaker_summary(frame)
    if not len(summary):  # an empty table says less than this
        errors.print(escape(f"{Path(path).name}: no speech found, so no speakers"))
        return
    errors.print(_frame_table(summary, digits=2, title=escape(
        f"{Path(path).name}: speakers (share of each one's speech time per emotion)")))
    moments = strongest_moments(frame)
    if len(moments):
        errors.print(_frame_table(moments.set_index("speaker"), title="strongest moments"))


def _load(config: Path, overrides: list[str] | None):
    from emovox.config import load_config

    return load_config(config, overrides or [])


def print_run(result) -> None:
    """Print the fold table, per-class scores and confusion matrix of a run."""
    from emovox.experiment import protocol_description
    from emovox.plots import format_confusion_matrix

    summary = result.summary.copy()
    title = f"{result.config.name}: {protocol_description(result)}"
    console.print(_frame_table(summary, title=title))
    console.print(_frame_table(result.per_class, title="per class (pooled over folds)"))
    console.print(format_confusion_matrix(result.confusion, result.classes), highlight=False,
                  soft_wrap=True)
    for note in result.notes:
        errors.print(f"[bold yellow]{note}[/]")


def _run_recipe(config: Path, overrides: list[str] | None, output_dir: Path | None,
                variants: list[str] | None) -> None:
    """Run every (chosen) variant of a recipe, save each run folder and print its scores."""
    import time

    from emovox.experiment import prepare_dataset, protocol_description, run_experiment, write_run
    from emovox.studies import load_recipe, variant_label

    configs = load_recipe(config, overrides or [], only=variants)
    datasets: dict[str, object] = {}
    done: list[tuple[str, object, Path, float]] = []
    for number, cfg in enumerate(configs, start=1):
        if len(configs) > 1:
            console.print(f"[bold]variant {number}/{len(configs)}: {variant_label(cfg)}[/]")
        started = time.perf_counter()
        # Variants on the same data and features share one extraction.
        key = json.dumps(cfg.model_dump(mode="json", include={
            "corpora", "labels", "subset", "features", "cache_dir"}), sort_keys=True)
        if key not in datasets:
            dataset = prepare_dataset(cfg, progress=True)
            _print_failures(dataset.failures)
            if dataset.dropped_labels:
                errors.print(f"label set {dataset.label_set.name}: left out "
                             f"{sum(dataset.dropped_labels.values())} utterances "
                             f"{dataset.dropped_labels}")
            datasets[key] = dataset
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_experiment(cfg, datasets[key])
        result.seconds["wall"] = time.perf_counter() - started
        run_dir = write_run(result, output_dir)
        print_run(result)
        console.print(f"run saved to [bold]{run_dir}[/]")
        done.append((variant_label(cfg), result, run_dir, result.seconds["wall"]))
    if len(done) > 1:
        table = Table(title=f"{config.name}: {len(done)} variants", header_style="bold")
        for column in ("variant", "UAR", "WA", "macro-F1", "protocol", "s"):
            table.add_column(column)
        for label, result, _, seconds in done:
            mean, std = result.summary.loc["mean"], result.summary.loc["std"]
            cells = [f"{mean[s]:.3f} ± {std[s]:.3f}" if std[s] == std[s] else f"{mean[s]:.3f}"
                     for s in ("uar", "wa", "macro_f1")]
            leak = " [bold red](LEAKY)[/]" if result.leaky else ""
            table.add_row(label + leak, *cells, protocol_description(result), f"{seconds:.0f}")
        console.print(table)


Variants = Annotated[list[str] | None, typer.Option(
    "--variant", help="Run only this variant of the recipe (repeat for several)")]
OutputDir = Annotated[Path | None, typer.Option(help="Folder for the run folders "
                                                     "(default: the config's output_dir)")]
FeatureEngine = Annotated[str | None, typer.Option(
    "--engine", help="Where features are extracted: local or ray (default: the config's "
                     "engine, local)")]
FeatureAddress = Annotated[str | None, typer.Option(
    "--address", help="Ray cluster HOST:PORT for --engine ray (default: start one here)")]


def _engine_overrides(overrides: list[str] | None, engine: str | None,
                      address: str | None) -> list[str]:
    """``--engine``/``--address`` as config overrides (validated with the config)."""
    extra = [*(overrides or [])]
    if engine is not None:
        extra.append(f"engine={engine}")
    if address is not None:
        extra.append(f"address={address}")
    return extra


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(help="Recipe or experiment YAML file")],
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    variant: Variants = None,
    engine: FeatureEngine = None,
    address: FeatureAddress = None,
) -> None:
    """Run a recipe: each of its variants under its stated protocol, one run folder each.

    A recipe with a 'variants:' list (e.g. the original leaky protocol, a
    speaker-independent one and our best model) runs them one after the other;
    leaky variants are labelled LEAKY. 'emovox report' gathers the run folders.
    """
    _run_recipe(config, _engine_overrides(overrides, engine, address), output_dir, variant)


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file")],
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    variant: Variants = None,
    engine: FeatureEngine = None,
    address: FeatureAddress = None,
) -> None:
    """Evaluate an experiment under its (speaker-independent) protocol and save the run.

    The same as 'emovox experiment' (kept for existing scripts).
    """
    _run_recipe(config, _engine_overrides(overrides, engine, address), output_dir, variant)


@app.command()
def report(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run folders (or folders holding run folders)")],
    markdown: Annotated[Path | None, typer.Option(help="Write the Markdown table here")] = None,
    html: Annotated[Path | None, typer.Option(
        help="Write one self-contained HTML report (plots embedded) here")] = None,
    title: Annotated[str, typer.Option(help="Title of the HTML report")] = "emovox runs",
    max_curves: Annotated[int, typer.Option(
        help="Training curves embedded per run in the HTML (-1: all)")] = 3,
) -> None:
    """Gather run folders into a Markdown table and an HTML report with their plots.

    A folder that is not a finished run is named on one line and the others go on.
    """
    from emovox.report import markdown_table, write_report

    runs, failures = write_report(run_dirs, markdown, html, title=title,
                                  max_curves=None if max_curves < 0 else max_curves)
    for message in failures:
        errors.print(f"[yellow]skipped:[/] {message}", highlight=False, soft_wrap=True)
    if not runs:
        _fail("no run folders could be read")
    if markdown is None and html is None:
        sys.stdout.write(markdown_table(runs, failures))
    for path in (markdown, html):
        if path is not None:
            console.print(f"{len(runs)} run(s) written to [bold]{path}[/]", highlight=False)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file")],
    overrides: Overrides = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write")] = Path(
        "model-bundle"),
    evaluate_first: Annotated[bool, typer.Option(
        "--evaluate/--no-evaluate", help="Score the protocol first and put it in the card")
    ] = True,
    engine: FeatureEngine = None,
    address: FeatureAddress = None,
) -> None:
    """Train on all the experiment's data and save a model bundle."""
    from emovox.bundle import save_bundle
    from emovox.experiment import train_bundle

    cfg = _load(config, _engine_overrides(overrides, engine, address))
    bundle, result = train_bundle(cfg, evaluate=evaluate_first)
    if result is not None:
        print_run(result)
    path = save_bundle(bundle, out)
    console.print(f"bundle saved to [bold]{path}[/] ({len(bundle.classes)} classes, "
                  f"{bundle.training['utterances']} utterances)")


@corpus_app.command("describe")
def corpus_describe(
    path: Annotated[Path, typer.Argument(help="Corpus folder or CSV/TSV manifest")],
    kind: Annotated[str | None, typer.Option(help="Adapter (detected when omitted)")] = None,
    plot: Annotated[Path | None, typer.Option(help="Save a bar chart PNG here")] = None,
) -> None:
    """Counts per emotion, speaker and gender."""
    from emovox.corpora import load_corpus
    from emovox.corpora.describe import describe, plot_counts

    corpus = load_corpus(path, kind)
    tables = describe(corpus.table)
    console.print(f"[bold]{path}[/]: {len(corpus.table)} utterances, "
                  f"{corpus.table['speaker'].nunique()} speakers")
    for name, frame in tables.items():
        console.print(_frame_table(frame, title=f"per {name}"))
    if plot:
        plot_counts(corpus.table, plot)
        console.print(f"chart saved to [bold]{plot}[/]")
    _print_failures(corpus.failures, "files could not be parsed and")


@app.command()
def show(
    file: Annotated[Path, typer.Argument(help="Audio file")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="PNG to write "
                                             "(default: FILE name + .png here)")] = None,
) -> None:
    """Save the exploratory figure of a recording: waveform, mel, MFCC, chroma."""
    from emovox.plots import save_recording_figure

    out = out or Path(f"{file.stem}.png")
    save_recording_figure(file, out)
    console.print(f"figure saved to [bold]{out}[/]")


@app.command()
def listen(
    bundle: ModelOption = None,
    window: Annotated[float, typer.Option(help="Seconds of audio each prediction "
                                               "sees")] = 2.0,
    hop: Annotated[float, typer.Option(help="Seconds between predictions")] = 1.0,
    device: Annotated[int | None, typer.Option(help="Input device index (python -m "
                                                    "sounddevice lists them)")] = None,
    seconds: Annotated[float | None, typer.Option(help="Stop after this many seconds "
                                                       "(default: Ctrl+C)")] = None,
) -> None:
    """Recognise emotion from the microphone, live, every HOP seconds."""
    from emovox.listen import ListenError, input_device, require_sounddevice
    from emovox.listen import listen as listen_live

    if not (window > 0 and 0 < hop <= window):
        _fail("--window and --hop must be > 0, with --hop <= --window")
    if seconds is not None and seconds <= 0:
        _fail("--seconds must be > 0")
    try:
        sd = require_sounddevice()
        input_device(sd, device)
    except ListenError as error:
        _fail(str(error))
    from emovox.recognizer import Recognizer

    recognizer = Recognizer(bundle, n_jobs=1)
    try:
        count = listen_live(recognizer, sd, device=device, window=window, hop=hop,
                            seconds=seconds, console=console)
    except ListenError as error:
        _fail(str(error))
    console.print(f"{count} windows classified", highlight=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this "
                                           "machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    bundle: ModelOption = None,
    onnx: Annotated[Path | None, typer.Option(help="Serve a folder written by "
                                                   "'emovox export --onnx' instead")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload in MB")] = 20.0,
    max_seconds: Annotated[float, typer.Option(help="Longest recording in seconds")] = 600.0,
) -> None:
    """Serve the HTTP API and the browser page (API documentation at /docs)."""
    try:
        import uvicorn

        from emovox.serve import create_app
    except ImportError as error:
        _fail(f"emovox serve needs fastapi, uvicorn and python-multipart ({error})")
    if bundle is not None and onnx is not None:
        _fail("give --bundle or --onnx, not both")
    if not (max_upload_mb > 0 and max_seconds > 0):
        _fail("--max-upload-mb and --max-seconds must be > 0")
    if onnx is not None:
        from emovox.export import OnnxRecognizer

        recognizer = OnnxRecognizer(onnx)
    else:
        from emovox.recognizer import Recognizer

        recognizer = Recognizer(bundle, n_jobs=1)
    application = create_app(recognizer, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                             max_seconds=max_seconds)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"emovox: {len(recognizer.classes)} emotions ({', '.join(recognizer.classes)})"
                  f" on [bold]http://{shown}:{port}/[/] (API docs at /docs); Ctrl+C stops",
                  highlight=False)
    # Bounded connections: past SERVE_CONNECTIONS open at once uvicorn answers 503, so
    # slow clients (whose bodies time out with 408) cannot pile up without limit; idle
    # keep-alive connections close after a few seconds.
    uvicorn.run(application, host=host, port=port, log_level="info",
                limit_concurrency=SERVE_CONNECTIONS, timeout_keep_alive=5)


@app.command()
def models() -> None:
    """List the packaged models: what each runs on, its encoder and its score."""
    from emovox.inference.packaged import describe_models

    rows = describe_models()
    table = Table(title="packaged models (--model NAME)", header_style="bold")
    for column in ("model", "runs on", "Whisper encoder", "UAR", "model card"):
        table.add_column(column, justify="right" if column == "UAR" else "left")
    for row in rows:
        uar = row["uar"]
        table.add_row(*map(Text, (str(row["model"]), str(row["runtime"]), str(row["features"]),
                                  "" if uar != uar else f"{uar:.3f}", str(row["card"]))))
    console.print(table)
    protocol = next((str(r["protocol"]) for r in rows if r["protocol"]), "")
    console.print(f"UAR: each bundle's own evaluation, {protocol}. Leave-one-corpus-out, "
                  "lone-file, confidence and speed figures are in each model card.")


@app.command("export")
def export_model(
    onnx: Annotated[Path, typer.Option("--onnx", help="Folder to write model.onnx, "
                                                      "preprocessing.json and the card to")],
    bundle: ModelOption = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Refuse the export when "
                                        "ONNX and native probabilities differ")] = True,
    int8: Annotated[bool, typer.Option("--int8", help="Quantise the encoder's MatMul weights "
                                       "to int8 (faster on CPU; probabilities move)")] = False,
) -> None:
    """Export a model bundle to a self-contained ONNX model and its preprocessing spec."""
    from emovox.export import MODEL_FILE, SPEC_FILE, export_onnx

    out = export_onnx(bundle, onnx, check=check, int8=int8)
    spec = json.loads((out / SPEC_FILE).read_text())
    graph = spec["graph"]
    size = (out / MODEL_FILE).stat().st_size / 1e6
    console.print(f"ONNX model written to [bold]{out}[/] ({size:.1f} MB): {graph['contains']}",
                  highlight=False, soft_wrap=True)
    console.print(f"input {graph['input']['name']} {graph['input']['shape']} "
                  f"({graph['kind']}; see {SPEC_FILE}), output probabilities of "
                  f"{', '.join(spec['classes'])}; largest difference from the native model "
                  f"{spec['check']['max_abs_diff']:.1e}", highlight=False, soft_wrap=True)


def main() -> None:
    """Entry point that turns emovox errors into one line and exit code 2."""
    try:
        app()
    except EmovoxError as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False,
                     soft_wrap=True)
        sys.exit(2)


