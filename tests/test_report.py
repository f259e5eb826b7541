"""emovox report: run folders -> Markdown table and a self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
import os
import re

import pytest
from typer.testing import CliRunner

from emovox.cli import app
from emovox.protocols import LEAKAGE_MESSAGE
from emovox.report import ReportError, collect_runs, html_report, load_run, markdown_table

PNG = b"\x89PNG\r\n\x1a\n" + b"fake image bytes"


def fake_run(root, name, variant, protocol, leaky, folds, classes=("angry", "sad"),
             curves=2, wall=12.3):
    """A run folder as write_run lays it out, with made-up scores."""
    folder = root / f"{name}.{variant}-20260101-000000"
    folder.mkdir(parents=True)
    scores = [{"name": f"fold{i}", "n_test": 10, "uar": u, "wa": u + 0.01, "macro_f1": u - 0.01}
              for i, u in enumerate(folds)]
    mean = {s: sum(f[s] for f in scores) / len(scores) for s in ("uar", "wa", "macro_f1")}
    std = {s: (sum((f[s] - mean[s]) ** 2 for f in scores) / len(scores)) ** 0.5
           for s in mean}
    metrics = {"name": name, "variant": variant, "protocol": protocol, "leaky": leaky,
               "notes": ["LEAKY SPLIT: speakers shared"] if leaky else [],
               "classes": list(classes), "mean": mean, "std": std, "folds": scores,
               "per_class": [{"class": c, "precision": 0.5, "recall": 0.25 + 0.5 * i,
                              "f1": 0.4, "support": 10} for i, c in enumerate(classes)],
               "confusion": [[1, 0], [0, 1]],
               "seconds": {"features": 1.0, "train_and_test": 2.0, "wall": wall}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "config.yaml").write_text(f"name: {name}\n")
    (folder / "confusion.png").write_bytes(PNG + b"confusion")
    (folder / "folds.png").write_bytes(PNG + b"folds")
    for i in range(1, curves + 1):
        (folder / f"training-curve-{i:02d}.png").write_bytes(PNG + f"curve{i}".encode())
    return folder


@pytest.fixture()
def runs_root(tmp_path):
    root = tmp_path / "runs"
    leaky = fake_run(root, "study6", "original_leaky", f"random split ({LEAKAGE_MESSAGE})",
                     True, [0.77])
    honest = fake_run(root, "study6", "speaker_folds", "6 speaker-disjoint folds", False,
                      [0.5, 0.6, 0.7], curves=5, wall=99.6)
    # The speaker_folds run finished first: runs are listed in the order they finished
    # (a recipe's variant order), not by name.
    os.utime(honest / "metrics.json", (1e9, 1e9))
    os.utime(leaky / "metrics.json", (2e9, 2e9))
    (root / ".study6.tmp-abc").mkdir()  # an unfinished run's work folder: not a run
    bad = root.parent / "bad-run"
    bad.mkdir()
    (bad / "config.yaml").write_text("name: x\n")
    broken = root.parent / "broken-run"
    broken.mkdir()
    (broken / "metrics.json").write_text("{not json")
    return root


def test_markdown_has_a_row_per_run_with_mean_std_and_leaky_flag(runs_root):
    runs, failures = collect_runs([runs_root, runs_root.parent / "bad-run",
                                   runs_root.parent / "broken-run"])
    assert [r.variant for r in runs] == ["speaker_folds", "original_leaky"]
    assert len(failures) == 2
    assert "bad-run: no metrics.json" in failures[0]
    assert "broken-run: metrics.json is not a run's" in failures[1]
    text = markdown_table(runs, failures)
    lines = text.splitlines()
    assert lines[0].startswith("| study | variant | protocol | UAR | WA | macro-F1 | folds")
    leaky = next(line for line in lines if "original_leaky" in line)
    honest = next(line for line in lines if "speaker_folds" in line)
    assert "**LEAKY**" in leaky and "| 0.770 |" in leaky and "±" not in leaky
    assert "| random split (LEAKY SPLIT) |" in leaky  # the long explanation is cut
    assert "| no |" in honest and "0.600 ± 0.082" in honest  # std over 3 folds, ddof=0
    assert "| 3 | 30 |" in honest and honest.endswith("| 100 |")
    assert "Not included (2 folder(s) could not be read)" in text
    assert "- " + failures[0] in text


def test_html_is_self_contained_with_plots_and_per_class_recall(runs_root):
    runs, _ = collect_runs([runs_root])
    page = html_report(runs, ["somewhere: no metrics.json"], title="Studies", max_curves=3)
    # Every image is inline: no src pointing at another file.
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    encoded = base64.b64encode(PNG + b"confusion").decode()
    assert encoded in page
    assert base64.b64encode(PNG + b"curve3").decode() in page
    assert base64.b64encode(PNG + b"curve4").decode() not in page  # capped at 3 per run
    assert "2 more training curve(s)" in page
    # folds.png only for the run with several folds.
    assert page.count(base64.b64encode(PNG + b"folds").decode()) == 1
    # the legend, the run's summary row and its section; none for the other run
    assert page.count('<span class="leaky">LEAKY</span>') == 3
    assert "LEAKY SPLIT: speakers shared" in page  # the run's note
    assert html.escape(LEAKAGE_MESSAGE) in page  # the whole protocol sentence
    assert "<td>sad</td><td>0.750</td>" in page  # per-class recall
    assert "<title>Studies</title>" in page and "somewhere: no metrics.json" in page


def test_load_run_names_the_folder(tmp_path):
    with pytest.raises(ReportError, match="nothing-here: not a folder"):
        load_run(tmp_path / "nothing-here")
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ReportError, match=r"half: metrics\.json is not a run.s"):
        load_run(folder)


def test_cli_report_writes_files_atomically_and_goes_on_after_a_bad_folder(runs_root,
                                                                          tmp_path):
    out_md, out_html = tmp_path / "docs" / "table.md", tmp_path / "docs" / "report.html"
    out_md.parent.mkdir()
    out_md.write_text("old content")
    result = CliRunner().invoke(app, ["report", str(runs_root), str(tmp_path / "bad-run"),
                                      "--markdown", str(out_md), "--html", str(out_html)])
    assert result.exit_code == 0, result.output
    assert "skipped:" in result.output and "bad-run: no metrics.json" in result.output
    assert "old content" not in out_md.read_text()
    assert "speaker_folds" in out_md.read_text() and "bad-run" in out_md.read_text()
    assert out_html.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in out_md.parent.iterdir()) == ["report.html", "table.md"]
    result = CliRunner().invoke(app, ["report", str(tmp_path / "bad-run")])
    assert result.exit_code == 2 and "no run folders could be read" in result.output
