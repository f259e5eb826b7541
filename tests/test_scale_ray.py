"""Batch jobs on Ray: a local cluster started here (one per module, 2 CPUs, object store
bounded) and two nodes on loopback started with `ray start` in their own processes
(about 45 s), each stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emovox.scale.runner import read_results, run_job, run_timelines

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.corpora
CLASSES = ["angry", "disgust", "fearful", "happy", "neutral", "sad"]


@pytest.fixture(scope="module")
def files(crema_twelve: list[str]) -> list[str]:
    return crema_twelve


@pytest.fixture(scope="module")
def expected(files, tmp_path_factory) -> pd.DataFrame:
    """The local engine's answer (in this process)."""
    out = tmp_path_factory.mktemp("local") / "out.parquet"
    run_job([{"file": f} for f in files], out, jobs=1, progress=False)
    return read_results(out).sort_values("file").reset_index(drop=True)


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2,
             include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield
    ray.shutdown()


def same_rows(result: pd.DataFrame, expected: pd.DataFrame) -> None:
    result = result.sort_values("file").reset_index(drop=True)
    assert list(result["file"]) == list(expected["file"])  # each file exactly once
    np.testing.assert_allclose(result[CLASSES].to_numpy(float),
                               expected[CLASSES].to_numpy(float), atol=1e-6)


def test_ray_answers_as_local_and_survives_a_killed_worker(cluster, files, expected,
                                                           tmp_path):
    killed: list[int] = []

    def kill_one(summary, executor):
        if not killed:
            killed.append(executor.pids()[0])
            os.kill(killed[0], signal.SIGKILL)  # Ray restarts it and retries its batches

    out = tmp_path / "out.parquet"
    summary = run_job([{"file": f} for f in files], out, engine="ray", jobs=2,
                      total=len(files), progress=False, on_batch=kill_one)
    assert killed and summary.workers == 2 and summary.failures == []
    same_rows(read_results(out), expected)
    # A re-run on Ray skips every file.
    again = run_job([{"file": f} for f in files], out, engine="ray", jobs=1, progress=False)
    assert again.encoded == 0 and again.done_before == len(files)


def test_conversation_timelines_on_ray_as_locally(cluster, crema_calls, tmp_path):
    """Timelines with speakers on Ray actors: the rows the local engine writes."""
    options = {"speakers": "auto"}
    items = [{"file": f} for f in crema_calls]
    local, remote = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    run_timelines(items, local, options=options, jobs=1, progress=False)
    summary = run_timelines(items, remote, options=options, engine="ray", jobs=2,
                            progress=False)
    assert summary.workers == 2 and summary.failures == [] and summary.encoded == 3
    mine, theirs = (read_results(p).sort_values(["file", "start"]).reset_index(drop=True)
                    for p in (remote, local))
    assert list(mine["speaker"].fillna("")) == list(theirs["speaker"].fillna(""))
    assert mine["speaker"].notna().any()
    np.testing.assert_allclose(mine[CLASSES].to_numpy(float), theirs[CLASSES].to_numpy(float),
                               atol=1e-6, equal_nan=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_experiment_features_extract_on_ray_as_locally(cluster, files, tmp_path):
    """The same per-file function, as Ray tasks: the same features, failures and cache."""
    from emovox.config import load_config
    from emovox.features import extract_many

    paths = [*files[:6], str(tmp_path / "missing.wav")]
    local = extract_many(paths, "mfcc_stats", cache_dir=None, n_jobs=1, progress=False)
    on_ray = extract_many(paths, "mfcc_stats", cache_dir=tmp_path / "cache",
                          progress=False, engine="ray")
    np.testing.assert_allclose(on_ray.features, local.features, rtol=1e-5, atol=1e-6)
    assert list(on_ray.ok) == list(local.ok) and [p for p, _ in on_ray.failures] == [paths[-1]]
    cached = extract_many(paths, "mfcc_stats", cache_dir=tmp_path / "cache", progress=False,
                          engine="ray")
    assert cached.n_cached == 6  # the Ray tasks wrote the cache entries
    # `emovox evaluate ... --engine ray --address HOST:PORT` sets these config values.
    config = load_config(data={"name": "x", "corpora": [str(tmp_path)], "labels": "common6",
                               "features": "mfcc_stats", "model": "logreg"},
                         overrides=["engine=ray", "address=10.0.0.1:6379"])
    assert (config.engine, config.address) == ("ray", "10.0.0.1:6379")


def test_two_nodes_on_loopback(files, expected, tmp_path):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--block", "--object-store-memory=150000000",
              "--node-ip-address=127.0.0.1"]
    # A test cluster on loopback: no token to share between its nodes, and the driver
    # keeps 127.0.0.1 (Ray otherwise swaps it for the machine's interface address).
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    nodes = [subprocess.Popen([ray_bin, "start", "--head", f"--port={port}",
                               "--include-dashboard=false", *common],
                              env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        time.sleep(8)
        nodes.append(subprocess.Popen([ray_bin, "start", f"--address={address}", *common],
                                      env=env, start_new_session=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(8)
        assert all(node.poll() is None for node in nodes), "a ray node did not start"
        out = tmp_path / "out.parquet"
        done = subprocess.run([str(Path(sys.executable).with_name("emovox")), "predict",
                               *files, "-o", str(out), "--engine", "ray", "--address",
                               address, "--jobs", "2"], capture_output=True, text=True,
                              timeout=300,
                              env={**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"})
        assert done.returncode == 0, done.stderr[-3000:]
        same_rows(read_results(out), expected)
    finally:
        for node in reversed(nodes):  # each node's process group, by its id
            try:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(node.pid, signal.SIGKILL)
