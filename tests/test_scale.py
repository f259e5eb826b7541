"""Batch jobs (emovox.scale) on the local engine: same answers as the in-memory path,
resume without re-encoding, exactly once after a killed worker, streamed manifests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from emovox.cli import app
from emovox.scale import work
from emovox.scale.runner import auto_jobs, read_results, run_job, run_timelines

pytestmark = pytest.mark.corpora
CLASSES = ["angry", "disgust", "fearful", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def files(crema_twelve: list[str]) -> list[str]:
    return crema_twelve


@pytest.fixture(scope="module")
def expected(files) -> pd.DataFrame:
    """The in-memory answer: all files adapted together (what `predict` always did)."""
    from emovox.recognizer import Recognizer

    frame = Recognizer(None, n_jobs=1).predict_files(files, progress=False)
    return frame.reset_index().sort_values("file").reset_index(drop=True)


def same_rows(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    result = result.sort_values("file").reset_index(drop=True)
    assert list(result["file"]) == list(expected["file"])  # each file exactly once
    np.testing.assert_allclose(result[CLASSES].to_numpy(float),
                               expected[CLASSES].to_numpy(float), atol=1e-6)
    assert list(result["emotion"]) == list(expected["emotion"])


def test_job_answers_as_predict_files_and_resumes_without_encoding(files, expected,
                                                                   tmp_path, monkeypatch):
    out = tmp_path / "out.parquet"

    class StopError(Exception):
        pass

    def stop_after_first(summary, executor):
        raise StopError  # the driver dies after storing one batch

    with pytest.raises(StopError):
        run_job([{"file": f} for f in files], out, jobs=1, total=len(files), batch_files=4,
                progress=False, on_batch=stop_after_first)
    encoded: list[str] = []
    original = work.encode_records

    def counting(recognizer, batch):
        encoded.extend(batch)
        return original(recognizer, batch)

    monkeypatch.setattr(work, "encode_records", counting)
    summary = run_job([{"file": f} for f in files], out, jobs=1, total=len(files),
                      batch_files=4, progress=False)
    assert summary.encoded_before == 4 and sorted(encoded) == sorted(files[4:])
    same_rows(read_results(out), expected)
    # The statistics are stored with the results: a re-run encodes nothing.
    assert (out / "_work" / "stats.parquet").exists()
    encoded.clear()
    again = run_job([{"file": f} for f in files], out, jobs=1, progress=False)
    assert encoded == [] and again.done_before == len(files) and again.rows_written == 0
    same_rows(read_results(out), expected)


def test_a_killed_local_worker_loses_nothing(files, expected, tmp_path):
    killed: list[int] = []

    def kill_one(summary, executor):
        if not killed:
            killed.append(executor.pids()[0])
            os.kill(killed[0], signal.SIGKILL)

    summary = run_job([{"file": f} for f in files], tmp_path / "out.csv", jobs=2,
                      total=len(files), progress=False, on_batch=kill_one)
    assert killed and summary.failures == []
    assert summary.workers == 2
    same_rows(pd.read_csv(tmp_path / "out.csv"), expected.round(4))


def test_groups_adapt_to_their_own_statistics(files, tmp_path):
    from emovox.recognizer import Recognizer

    items = [{"file": f, "speaker": os.path.basename(f)[:4]} for f in files]
    run_job(items, tmp_path / "out.parquet", jobs=1, group_by="speaker", progress=False)
    result = read_results(tmp_path / "out.parquet").sort_values("file")
    assert list(result["speaker"]) == [i["speaker"] for i in sorted(items, key=lambda i: i["file"])]
    # Four files of a speaker are too few to adapt to: the unadapted model answers.
    first = Recognizer(None, n_jobs=1, adapt="none").predict_files(files[:4], progress=False)
    np.testing.assert_allclose(result[CLASSES].to_numpy(float)[:4],
                               first[CLASSES].to_numpy(float), atol=1e-6)


def test_jobs_default_follows_the_work():
    assert auto_jobs(5) == 1
    assert auto_jobs(100_000) == auto_jobs(None) >= 1


def test_a_big_manifest_streams(files, tmp_path):
    """100,000 rows (paths repeating): results come before the manifest is read through
    (streamed, not listed first), and the driver stays under 1 GB. The time to the
    first result is measured in benchmarks/scale.py, not asserted here."""
    manifest = tmp_path / "big.csv"
    rows = pd.DataFrame({"path": [files[i % len(files)] for i in range(100_000)],
                         "call": [f"c{i}" for i in range(100_000)]})
    rows.to_csv(manifest, index=False)
    script = textwrap.dedent(f"""
        import json

        def peak_mb():
            # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a
            # big pytest process would report the parent's peak.
            for line in open("/proc/self/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        from emovox.scale.inputs import iter_items, manifest_rows
        from emovox.scale.runner import run_job
        source = {str(manifest)!r}
        s = run_job(iter_items([source]), {str(tmp_path / "out.parquet")!r}, jobs=1,
                    batch_files=4,
                    total=manifest_rows(source), progress=False)
        print(json.dumps({{"first_rows": s.rows_before_first_result, "files": s.files,
                          "duplicates": s.duplicates,
                          "rss_mb": peak_mb()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["files"] == len(files) and summary["duplicates"] == 100_000 - len(files)
    assert summary["first_rows"] < 50_000, summary
    assert summary["rss_mb"] < 1024, summary
    result = read_results(tmp_path / "out.parquet")
    assert sorted(result["file"]) == sorted(files)  # once each, first row's columns
    assert set(result["call"]) == {f"c{i}" for i in range(len(files))}


def test_cli_predicts_a_manifest_into_parquet(files, tmp_path):
    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"audio": files[:3], "speaker": ["a", "a", "b"],
                  "age": [30.0, 30.0, 41.0]}).to_parquet(manifest)
    out = tmp_path / "res.parquet"
    result = CliRunner().invoke(app, ["predict", str(manifest), "--path-column", "audio",
                                      "-o", str(out), "--group-by", "speaker"])
    assert result.exit_code == 0, result.output
    frame = read_results(out)
    assert len(frame) == 3 and list(frame.columns[-2:]) == ["speaker", "age"]
    assert frame["age"].dtype == float
    result = CliRunner().invoke(app, ["predict", str(manifest), "--path-column", "audio",
                                      "-o", str(out), "--resume"])
    assert result.exit_code == 0 and "3 files already done" in result.output
    result = CliRunner().invoke(app, ["predict", str(manifest), "-o", str(out)])
    assert result.exit_code == 2 and "no 'path' column" in result.output


def test_timeline_job_answers_as_predict_timeline_and_resumes(crema_calls, tmp_path):
    """Conversations as a batch job (two local workers): each file's timeline with its
    speakers, as predict_timeline makes it (CSV keeps 4 decimals); a bad file is
    listed, a re-run skips all."""
    from emovox.recognizer import Recognizer

    options = {"speakers": 2, "window": 2.0, "hop": 1.0}
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"not audio at all")
    out = tmp_path / "timelines.csv"
    items = [{"file": f, "call": k} for k, f in enumerate([*crema_calls, str(bad)])]
    summary = run_timelines(items, out, options=options, jobs=2, progress=False)
    assert summary.workers == 2 and [f for f, _ in summary.failures] == [str(bad)]
    result = pd.read_csv(out)
    recognizer = Recognizer(None, n_jobs=1)
    for k, path in enumerate(crema_calls):
        mine = result[result["file"] == path].reset_index(drop=True)
        alone = recognizer.predict_timeline(path, **options).reset_index()
        assert len(mine) == len(alone) and set(mine["call"]) == {k}
        np.testing.assert_allclose(mine[CLASSES].to_numpy(float),
                                   alone[CLASSES].to_numpy(float), atol=1e-4, equal_nan=True)
        assert list(mine["speaker"].fillna("")) == list(alone["speaker"].fillna(""))
        assert set(alone["speaker"].dropna()) == {"S1", "S2"}
    again = run_timelines(items[:-1], out, options=options, jobs=1, progress=False)
    assert again.done_before == len(crema_calls) and again.rows_written == 0


def test_cli_makes_conversation_timelines_of_a_manifest(crema_calls, tmp_path):
    manifest = tmp_path / "calls.csv"
    pd.DataFrame({"path": crema_calls, "agent": ["x", "y", "z"]}).to_csv(manifest, index=False)
    out = tmp_path / "timelines.parquet"
    result = CliRunner().invoke(app, ["predict", str(manifest), "--timeline", "--speakers",
                                      "2", "--voices", "ge2e", "-o", str(out)])
    assert result.exit_code == 0, result.output
    frame = read_results(out)
    assert set(frame["file"]) == set(crema_calls) and set(frame["agent"]) == {"x", "y", "z"}
    assert {"speaker", "speech", "speech_ratio"} <= set(frame.columns)
    refused = CliRunner().invoke(app, ["predict", str(manifest), "--timeline", "--plot",
                                       str(tmp_path / "p.png"), "-o", str(out)])
    assert refused.exit_code == 2 and "--plot" in refused.output
