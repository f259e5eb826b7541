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
errors = Console(stderr=True)

Overrides = Annotated[list[str] | None, typer.Argument(
    help="Config overrides as dotted.key=value, e.g. model.params.C=0.1")]


def _fail(message: str) -> None:
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
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
                                                help="Write results to this file")] = None,
    sample: Annotated[bool, typer.Option(help="Predict a synthetic voice sample "
                                              "(a smoke test needing no audio)")] = False,
    jobs: Annotated[int, typer.Option(help="Processes (-1: all cores)")] = -1,
) -> None:
    """Predict the emotion of audio files (or every audio file in folders)."""
    from emovox.recognizer import Recognizer
    from emovox.synth import synth_voice

    if output_format not in {"table", "csv", "json"}:
        _fail(f"--format must be table, csv or json, not {output_format!r}")
    recognizer = Recognizer(bundle, n_jobs=jobs)
    if sample:
        frame = recognizer.predict_signal(synth_voice(2.5), 16000, name="<synthetic voice>")
    elif not files:
        _fail("give audio files or folders to predict, or --sample")
    else:
        paths: list[str] = []
        from emovox.corpora.base import iter_audio_files

        for item in files:
            paths += [str(p) for p in iter_audio_files(item)] if item.is_dir() else [str(item)]
        frame = recognizer.predict_files(paths, progress=sys.stderr.isatty())
    failures = frame.attrs.get("failures", [])
    flat = frame.reset_index()
    if output_format == "table":
        shown = frame.copy()
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
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text)
    _print_failures(failures)
    if failures and flat.empty:
        raise typer.Exit(code=1)


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


@app.command()
def evaluate(
    config: Annotated[Path, typer.Argument(help="Experiment YAML file")],
    overrides: Overrides = None,
    output_dir: Annotated[Path | None, typer.Option(help="Folder for the run folder "
                                                         "(default: the config's)")] = None,
) -> None:
    """Evaluate an experiment under its (speaker-independent) protocol and save the run."""
    from emovox.experiment import prepare_dataset, run_experiment, write_run

    cfg = _load(config, overrides)
    dataset = prepare_dataset(cfg, progress=True)
    _print_failures(dataset.failures)
    if dataset.dropped_labels:
        errors.print(f"label set {dataset.label_set.name}: left out "
                     f"{sum(dataset.dropped_labels.values())} utterances "
                     f"{dataset.dropped_labels}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_experiment(cfg, dataset)
    run_dir = write_run(result, output_dir)
    print_run(result)
    console.print(f"run saved to [bold]{run_dir}[/]")


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
        console.print(_frame_table(frame, title=f"per {name}", digits=0))
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


def main() -> None:
    """Entry point that turns emovox errors into one line and exit code 2."""
    try:
        app()
    except EmovoxError as error:
        errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


