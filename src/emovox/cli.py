"""The ``emovox`` command: a thin shell over the library that parses, calls and prints."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from emovox.errors import EmovoxError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="emovox: speech emotion recognition with speaker-independent evaluation.")
corpus_app = typer.Typer(no_args_is_help=True, help="Inspect emotional speech corpora.")
app.add_typer(corpus_app, name="corpus")
console = Console()
if not console.is_terminal:  # piped or captured: don't squeeze tables into 80 columns
    console = Console(width=200)
errors = Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(
    help="Config overrides as dotted.key=value, e.g. model.params.C=0.1")]


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _reason(path: str, reason: str) -> str:
    return reason.removeprefix(f"{path}: ")


def _print_failures(failures: list[tuple[str, str]], what: str = "files") -> None:
    if not failures:
        return
    errors.print(f"[yellow]{len(failures)} {what} failed:[/]")
    for path, reason in failures:
        errors.print(f"  {path}: {_reason(path, reason)}", highlight=False, soft_wrap=True)


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
        table.add_row(*cells)
    return table


@app.command()
def predict(
    files: Annotated[list[Path] | None, typer.Argument(help="Audio files or folders")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Model bundle folder (default: "
                                                     "the packaged model)")] = None,
    output_format: Annotated[str, typer.Option("--format", "-f",
                                               help="table, csv or json")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write results to this file (csv and "
                                                     "json: file by file)")] = None,
    sample: Annotated[bool, typer.Option(help="Predict a synthetic voice sample "
                                              "(a smoke test needing no audio)")] = False,
    jobs: Annotated[int, typer.Option(help="Processes (-1: all cores)")] = -1,
    timeline: Annotated[bool, typer.Option(
        "--timeline", help="Emotion over time: windows over the speech (long recordings)")
    ] = False,
    window: Annotated[float, typer.Option(help="Timeline window in seconds")] = 2.0,
    hop: Annotated[float, typer.Option(help="Seconds between timeline windows")] = 1.0,
    vad: Annotated[str, typer.Option(help="Timeline voice activity detector: silero or "
                                          "energy")] = "silero",
    no_vad: Annotated[bool, typer.Option("--no-vad", help="Timeline: classify every "
                                                         "window, speech or not")] = False,
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
        help="A short recording (or several files) of the speaker to adapt to")] = None,
) -> None:
    """Predict the emotion of audio files (or every audio file in folders).

    With --timeline, long recordings come back as windows over their speech.

    With --output (csv or json), results are written file by file; --resume skips done files.

    A bad file is reported and the others go on.
    """
    from emovox.recognizer import Recognizer
    from emovox.synth import synth_voice
    from emovox.timeline import ResultsFile, check_window, timeline_complete
    from emovox.vad import VAD_METHODS

    if output_format not in {"table", "csv", "json"}:
        _fail(f"--format must be table, csv or json, not {output_format!r}")
    if timeline:
        try:
            check_window(window, hop)
        except ValueError as error:
            _fail(f"--window/--hop: {error}")
        if vad not in VAD_METHODS:
            _fail(f"--vad must be {' or '.join(VAD_METHODS)}, not {vad!r}")
    elif plot:
        _fail("--plot draws a timeline: add --timeline")
    if resume and (output is None or output_format == "table"):
        _fail("--resume needs --output with --format csv or json")
    recognizer = Recognizer(bundle, n_jobs=jobs, adapt=adapt)  # checks --adapt
    if calibrate:
        used = recognizer.calibrate(calibrate)
        errors.print(f"adapted to the speaker of {len(calibrate)} calibration file(s) "
                     f"({used} usable)", highlight=False)
    options = {"window": window, "hop": hop, "vad": None if no_vad else vad}
    columns = ["file", "start", "end", "emotion", "confidence", *recognizer.classes]
    columns += ["speech", "speech_ratio"] if timeline else []
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
        signal = synth_voice(2.5)
        frames.append(recognizer.predict_timeline(signal, sample_rate=16000,
                                                  name="<synthetic voice>", **options)
                      if timeline else
                      recognizer.predict_signal(signal, 16000, name="<synthetic voice>"))
        if plot is not None:
            from emovox.timeline import plot_timeline

            plot_timeline(frames[0], plot)
    elif not files:
        _fail("give audio files or folders to predict, or --sample")
    else:
        paths: list[str] = []
        from emovox.corpora.base import iter_audio_files

        for item in files:
            paths += [str(p) for p in iter_audio_files(item)] if item.is_dir() else [str(item)]
        todo = [p for p in paths if writer is None or not writer.is_done(p)]
        skipped = len(paths) - len(todo)
        if timeline:
            frames, failures = _predict_timelines(recognizer, todo, options, writer, plot,
                                                  single=len(paths) == 1)
        elif writer is None:
            frames = [recognizer.predict_files(todo, progress=sys.stderr.isatty())]
            failures = frames[0].attrs.get("failures", [])
        else:  # in batches, each written as soon as it is done
            if recognizer.adapter is not None and adapt in ("auto", "batch") and not calibrate:
                # Statistics of the whole input (done files too), so batches and a
                # resumed run adapt exactly as one call over every file would.
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
        errors.print(f"{writer.rows_written} row(s) written to {output}"
                     + (f"; {skipped} files already done, skipped" if skipped else ""),
                     highlight=False, soft_wrap=True)
        _print_failures(failures)
        if failures and not writer.rows_written and not skipped:
            raise typer.Exit(code=1)
        return
    nonempty = [f for f in frames if len(f)]
    frame = pd.concat(nonempty) if nonempty else frames[0] if frames else pd.DataFrame(
        columns=columns).set_index(["file", "start", "end"])
    flat = frame.reset_index()
    if output_format == "table":
        shown = frame.copy()
        if timeline:
            shown["emotion"] = shown["emotion"].fillna("-")
        if len(shown):
            shown.index = shown.index.set_levels(
                [shown.index.levels[0].map(lambda p: Path(p).name if "/" in p else p),
                 *shown.index.levels[1:]])
        text_console = Console(file=output.open("w")) if output else console
        text_console.print(_frame_table(shown, title=f"emotion ({recognizer.bundle.labels.name}"
                                                      f" model)"))
    else:
        text = (flat.to_csv(index=False, float_format="%.4f") if output_format == "csv"
                else json.dumps(json.loads(flat.to_json(orient="records", double_precision=4)),
                                indent=2) + "\n")
        sys.stdout.write(text)
    _print_failures(failures)
    if failures and flat.empty:
        raise typer.Exit(code=1)


def _predict_timelines(recognizer, paths: list[str], options: dict,
                       writer, plot: Path | None,
                       single: bool) -> tuple[list[pd.DataFrame], list[tuple[str, str]]]:
    """Timelines of ``paths`` one by one: written (or kept) and plotted; failures listed."""
    from emovox.timeline import plot_timeline

    frames: list[pd.DataFrame] = []
    failures: list[tuple[str, str]] = []
    plotted: set[Path] = set()
    for number, path in enumerate(paths, 1):
        if sys.stderr.isatty():
            errors.print(f"timeline {number}/{len(paths)}: {path}", highlight=False)
        try:
            frame = recognizer.predict_timeline(path, **options)
        except Exception as error:  # a bad file never stops the batch
            reason = str(error) if isinstance(error, EmovoxError) else (
                f"{type(error).__name__}: {error}")
            failures.append((path, reason))
            continue
        if writer is not None:
            writer.add(frame)
        else:
            frames.append(frame)
        if plot is not None and len(frame):
            target = plot if single else plot.with_name(
                f"{plot.stem}-{Path(path).stem}{plot.suffix or '.png'}")
            while target in plotted:
                target = target.with_name(f"{target.stem}_{len(plotted)}{target.suffix}")
            plotted.add(target)
            plot_timeline(frame, target)
    return frames, failures

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


@app.command()
def experiment(
    config: Annotated[Path, typer.Argument(help="Recipe or experiment YAML file")],
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    variant: Variants = None,
) -> None:
    """Run a recipe: each of its variants under its stated protocol, one run folder each.

    A recipe with a 'variants:' list (e.g. the original leaky protocol, a
    speaker-independent one and our best model) runs them one after the other;
    leaky variants are labelled LEAKY. 'emovox report' gathers the run folders.
    """
    _run_recipe(config, overrides, output_dir, variant)


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file")],
    overrides: Overrides = None,
    output_dir: OutputDir = None,
    variant: Variants = None,
) -> None:
    """Evaluate an experiment under its (speaker-independent) protocol and save the run.

    The same as 'emovox experiment' (kept for existing scripts).
    """
    _run_recipe(config, overrides, output_dir, variant)


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
) -> None:
    """Train on all the experiment's data and save a model bundle."""
    from emovox.bundle import save_bundle
    from emovox.experiment import train_bundle

    cfg = _load(config, overrides)
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
    bundle: Annotated[Path | None, typer.Option(help="Model bundle folder (default: "
                                                     "the packaged model)")] = None,
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
    bundle: Annotated[Path | None, typer.Option(help="Model bundle folder (default: "
                                                     "the packaged model)")] = None,
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
    uvicorn.run(application, host=host, port=port, log_level="info")


@app.command("export")
def export_model(
    onnx: Annotated[Path, typer.Option("--onnx", help="Folder to write model.onnx, "
                                                      "preprocessing.json and the card to")],
    bundle: Annotated[Path | None, typer.Option(help="Model bundle folder (default: "
                                                     "the packaged model)")] = None,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Refuse the export when "
                                        "ONNX and native probabilities differ")] = True,
) -> None:
    """Export a model bundle to a self-contained ONNX model and its preprocessing spec."""
    from emovox.export import MODEL_FILE, SPEC_FILE, export_onnx

    out = export_onnx(bundle, onnx, check=check)
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
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


