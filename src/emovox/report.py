"""Gather run folders into a Markdown table and one self-contained HTML report.

A run folder is what :func:`emovox.experiment.write_run` writes: ``metrics.json``,
``config.yaml``, ``per_class.csv``, ``confusion.png``, ``folds.png`` and
``training-curve-NN.png``. :func:`collect_runs` reads many of them (a folder that
holds run folders stands for all of them); a folder that cannot be read is listed
as a failure and the others go on. :func:`markdown_table` gives one row per run;
:func:`html_report` gives one page with every plot embedded (base64), so the file can
be moved or mailed on its own.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emovox.errors import EmovoxError
from emovox.evaluation import SCORE_NAMES, SCORES
from emovox.fileio import atomic_write_text
from emovox.protocols import LEAKAGE_MESSAGE, VALIDATE_ON_TEST_MESSAGE

__all__ = [
    "ReportError",
    "RunSummary",
    "collect_runs",
    "html_report",
    "load_run",
    "markdown_table",
    "short_protocol",
    "write_report",
]


class ReportError(EmovoxError, ValueError):
    """A run folder that cannot be read (named in the message)."""


@dataclass
class RunSummary:
    """What a report shows of one run folder.

    Attributes
    ----------
    folder : Path
    study, variant : str
        The recipe's ``name`` and the variant (empty for a plain experiment).
    protocol : str
        The run's protocol sentence (leaky ones say LEAKY).
    leaky : bool
    mean, std : dict of str to float
        ``uar``, ``wa`` and ``macro_f1`` over the folds.
    folds : list of dict
        Per fold: ``name``, ``n_test`` and the scores.
    classes : list of str
    per_class : list of dict
        Per class: ``class``, ``precision``, ``recall``, ``f1``, ``support``.
    seconds : float
        Wall time of the run (features + training + testing when no wall time was
        recorded).
    notes : list of str
    images : dict of str to list of Path
        ``confusion``, ``folds`` and ``curves`` (training curves, in fold order).
    """

    folder: Path
    study: str
    variant: str
    protocol: str
    leaky: bool
    mean: dict[str, float]
    std: dict[str, float]
    folds: list[dict[str, Any]]
    classes: list[str]
    per_class: list[dict[str, Any]]
    seconds: float
    notes: list[str] = field(default_factory=list)
    images: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``study.variant`` (or the study alone)."""
        return f"{self.study}.{self.variant}" if self.variant else self.study

    @property
    def n_test(self) -> int:
        """Test utterances over all folds."""
        return int(sum(f.get("n_test", 0) for f in self.folds))

    def score(self, name: str) -> str:
        """``mean ± std`` over folds (the mean alone for a single fold)."""
        mean = self.mean.get(name, float("nan"))
        if len(self.folds) > 1:
            return f"{mean:.3f} ± {self.std.get(name, float('nan')):.3f}"
        return f"{mean:.3f}"


def load_run(folder: str | Path) -> RunSummary:
    """Read one run folder.

    Parameters
    ----------
    folder : str or Path

    Returns
    -------
    RunSummary

    Raises
    ------
    ReportError
        No folder, no ``metrics.json``, or a ``metrics.json`` that is not a run's.
    """
    folder = Path(folder)
    path = folder / "metrics.json"
    if not folder.is_dir():
        raise ReportError(f"{folder}: not a folder")
    if not path.is_file():
        raise ReportError(f"{folder}: no metrics.json (not a run folder, or an unfinished run)")
    try:
        metrics = json.loads(path.read_text())
        seconds = metrics.get("seconds", {})
        wall = seconds.get("wall")
        if wall is None:
            wall = float(seconds.get("features", 0.0)) + float(seconds.get("train_and_test", 0.0))
        return RunSummary(
            folder=folder,
            study=str(metrics["name"]),
            variant=str(metrics.get("variant", "")),
            protocol=str(metrics["protocol"]),
            leaky=bool(metrics["leaky"]),
            mean={s: float(metrics["mean"][s]) for s in SCORES},
            std={s: float(metrics["std"][s]) for s in SCORES},
            folds=list(metrics["folds"]),
            classes=list(metrics.get("classes", [])),
            per_class=list(metrics.get("per_class", [])),
            seconds=float(wall),
            notes=[str(n) for n in metrics.get("notes", [])],
            images={
                "confusion": [p for p in [folder / "confusion.png"] if p.is_file()],
                "folds": [p for p in [folder / "folds.png"] if p.is_file()],
                "curves": sorted(folder.glob("training-curve-*.png")),
            },
        )
    except (ValueError, KeyError, TypeError) as error:
        reason = f"missing {error}" if isinstance(error, KeyError) else str(error)
        raise ReportError(f"{folder}: metrics.json is not a run's ({reason})") from None


def _expand(folders: Iterable[str | Path]) -> list[Path]:
    """Run folders, with a folder of run folders standing for its (visible) children."""
    out: list[Path] = []
    for folder in map(Path, folders):
        children = [] if (folder / "metrics.json").exists() or not folder.is_dir() else sorted(
            c for c in folder.iterdir()
            if c.is_dir() and not c.name.startswith(".") and (c / "metrics.json").is_file())
        # Children in the order they finished (a recipe's variants in recipe order).
        children.sort(key=lambda c: ((c / "metrics.json").stat().st_mtime, c.name))
        out.extend(children or [folder])
    return out


def collect_runs(folders: Iterable[str | Path]) -> tuple[list[RunSummary], list[str]]:
    """Read every run folder; a bad one becomes a one-line failure, the rest go on.

    Parameters
    ----------
    folders : iterable of str or Path
        Run folders, or folders holding run folders (their hidden, unfinished
        ``.name-*`` work folders are skipped).

    Returns
    -------
    runs : list of RunSummary
        Sorted by study, then in the order given (run folders sort by time).
    failures : list of str
        One message per folder that could not be read, naming it.
    """
    runs: list[RunSummary] = []
    failures: list[str] = []
    for folder in _expand(folders):
        try:
            runs.append(load_run(folder))
        except ReportError as error:
            failures.append(str(error))
    order = {study: i for i, study in enumerate(dict.fromkeys(r.study for r in runs))}
    runs.sort(key=lambda r: order[r.study])  # stable: keeps the given order in a study
    return runs, failures


def short_protocol(text: str) -> str:
    """The protocol sentence with the long leakage explanations cut to their label.

    ``random utterance split (LEAKY SPLIT: ...)`` becomes ``random utterance split
    (LEAKY SPLIT)``; the full sentence stays in the HTML report and ``metrics.json``.
    """
    for message in (LEAKAGE_MESSAGE, VALIDATE_ON_TEST_MESSAGE):
        text = text.replace(message, message.split(":", 1)[0])
    return text


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(runs: Sequence[RunSummary], failures: Sequence[str] = ()) -> str:
    """One Markdown table row per run, and the folders that failed.

    Columns: study, variant, protocol (see :func:`short_protocol`), UAR, WA, macro-F1
    (mean ± std over folds), n folds, test utterances, leaky (**LEAKY** in bold),
    seconds.

    Parameters
    ----------
    runs : sequence of RunSummary
    failures : sequence of str
        Messages from :func:`collect_runs`, listed under the table.

    Returns
    -------
    str
        Markdown, ending with a newline.
    """
    header = ["study", "variant", "protocol", *(SCORE_NAMES[s] for s in SCORES), "folds",
              "n test", "leaky", "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        cells = [run.study, run.variant or "-", short_protocol(run.protocol),
                 *(run.score(s) for s in SCORES), str(len(run.folds)), str(run.n_test),
                 "**LEAKY**" if run.leaky else "no", f"{run.seconds:.0f}"]
        lines.append("| " + " | ".join(_md(c) for c in cells) + " |")
    if failures:
        lines += ["", f"Not included ({len(failures)} folder(s) could not be read):", ""]
        lines += [f"- {_md(message)}" for message in failures]
    return "\n".join(lines) + "\n"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:right}td:first-child,th:first-child{text-align:left}
.leaky{background:#b00;color:#fff;font-weight:bold;padding:0 .4em;border-radius:3px}
.note{color:#b00}.bar{display:inline-block;height:.8em;background:#4a7ab5}
.plots img{max-width:32%;vertical-align:top;margin:.2em}.failed{color:#b00}
"""


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}" '
            f'title="{html.escape(path.name)}">')


def _run_html(run: RunSummary, max_curves: int | None) -> list[str]:
    e = html.escape
    badge = ' <span class="leaky">LEAKY</span>' if run.leaky else ""
    out = [f'<h3 id="{e(run.label)}">{e(run.variant or run.study)}{badge}</h3>',
           f"<p>{e(run.protocol)} &middot; {len(run.folds)} fold(s), {run.n_test} test "
           f"utterances, {run.seconds:.0f} s &middot; <code>{e(run.folder.name)}</code></p>"]
    out += [f'<p class="note">{e(note)}</p>' for note in run.notes]
    out.append("<table><tr><th>fold</th><th>n test</th>"
               + "".join(f"<th>{SCORE_NAMES[s]}</th>" for s in SCORES) + "</tr>")
    for fold in run.folds:
        out.append(f"<tr><td>{e(str(fold.get('name', '')))}</td><td>{fold.get('n_test', '')}"
                   "</td>" + "".join(f"<td>{float(fold.get(s, float('nan'))):.3f}</td>"
                                     for s in SCORES) + "</tr>")
    if len(run.folds) > 1:
        out.append("<tr><th>mean ± std</th><td></td>"
                   + "".join(f"<th>{run.score(s)}</th>" for s in SCORES) + "</tr>")
    out.append("</table>")
    if run.per_class:
        out.append("<table><tr><th>class</th><th>recall</th><th></th><th>precision</th>"
                   "<th>F1</th><th>support</th></tr>")
        for row in run.per_class:
            recall = float(row.get("recall", 0.0))
            out.append(
                f"<tr><td>{e(str(row.get('class', '')))}</td><td>{recall:.3f}</td>"
                f'<td style="text-align:left;width:10em"><span class="bar" '
                f'style="width:{100 * recall:.0f}%"></span></td>'
                f"<td>{float(row.get('precision', 0.0)):.3f}</td>"
                f"<td>{float(row.get('f1', 0.0)):.3f}</td><td>{row.get('support', '')}</td></tr>")
        out.append("</table>")
    curves = run.images.get("curves", [])
    shown = curves if max_curves is None else curves[:max_curves]
    images = run.images.get("confusion", []) + (
        run.images.get("folds", []) if len(run.folds) > 1 else []) + shown
    out.append('<div class="plots">' + "".join(_image(p) for p in images) + "</div>")
    if len(shown) < len(curves):
        out.append(f"<p>{len(curves) - len(shown)} more training curve(s) in the run "
                   "folder.</p>")
    return out


def html_report(runs: Sequence[RunSummary], failures: Sequence[str] = (),
                title: str = "emovox runs", max_curves: int | None = 3) -> str:
    """One self-contained HTML page: a summary table, then every run with its plots.

    Parameters
    ----------
    runs : sequence of RunSummary
    failures : sequence of str
        Listed at the end.
    title : str
    max_curves : int, optional
        Training curves embedded per run (the first ones); ``None``: all.

    Returns
    -------
    str
        HTML with the images embedded as base64 (no links to other files).
    """
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>",
           f"<h1>{e(title)}</h1>",
           "<p>UAR = unweighted average recall, WA = accuracy; mean ± std over folds. "
           'Rows marked <span class="leaky">LEAKY</span> share speakers between training '
           "and test, or chose the model on the test data: they do not measure unseen "
           "voices.</p>",
           "<table><tr><th>run</th><th>protocol</th>"
           + "".join(f"<th>{SCORE_NAMES[s]}</th>" for s in SCORES)
           + "<th>folds</th><th>s</th></tr>"]
    for run in runs:
        badge = ' <span class="leaky">LEAKY</span>' if run.leaky else ""
        out.append(f'<tr><td><a href="#{e(run.label)}">{e(run.label)}</a>{badge}</td>'
                   f'<td style="text-align:left">{e(run.protocol)}</td>'
                   + "".join(f"<td>{run.score(s)}</td>" for s in SCORES)
                   + f"<td>{len(run.folds)}</td><td>{run.seconds:.0f}</td></tr>")
    out.append("</table>")
    study = None
    for run in runs:
        if run.study != study:
            study = run.study
            out.append(f"<h2>{e(study)}</h2>")
        out += _run_html(run, max_curves)
    if failures:
        out.append(f'<h2 class="failed">Not included ({len(failures)})</h2><ul>')
        out += [f'<li class="failed">{e(message)}</li>' for message in failures]
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(folders: Iterable[str | Path], markdown: str | Path | None = None,
                 html_path: str | Path | None = None, title: str = "emovox runs",
                 max_curves: int | None = 3) -> tuple[list[RunSummary], list[str]]:
    """Collect run folders and write the Markdown table and/or the HTML report.

    Parameters
    ----------
    folders : iterable of str or Path
    markdown, html_path : str or Path, optional
        Files to write (atomically: a reader never sees half a report).
    title : str
        Title of the HTML page.
    max_curves : int, optional
        See :func:`html_report`.

    Returns
    -------
    runs : list of RunSummary
    failures : list of str
    """
    runs, failures = collect_runs(folders)
    if markdown is not None:
        atomic_write_text(Path(markdown), markdown_table(runs, failures))
    if html_path is not None:
        atomic_write_text(Path(html_path), html_report(runs, failures, title, max_curves))
    return runs, failures
