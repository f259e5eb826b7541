"""The browser page end to end: headless Debian Chromium driven by Playwright.

Needs the Debian packages ``chromium`` (``/usr/bin/chromium``) and the PyPI package
``playwright`` (its own browser download is never used); skipped without them. The
microphone is Chromium's fake capture device, playing a synthetic voice file.
Screenshots go to ``tmp_path``. To refresh the README's ``docs/screenshot.png`` (the
packaged model on real EmoDB speech), run explicitly::

    EMOVOX_UPDATE_SCREENSHOT=1 .venv/bin/python -m pytest tests/test_browser.py
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from test_serve import _http, live_server, make_bundle

from emovox.synth import synth_voice

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = REPO_ROOT / "docs" / "screenshot.png"
#: Set to 1 to overwrite the tracked ``docs/screenshot.png``; a normal run never does.
UPDATE_SCREENSHOT = os.environ.get("EMOVOX_UPDATE_SCREENSHOT") == "1"
CHROMIUM = os.environ.get("EMOVOX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Flags this machine's closed network needs (no background connections), plus the
#: fake microphone.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
TIMEOUT_MS = 90_000

if not Path(CHROMIUM).is_file() or not os.access(CHROMIUM, os.X_OK):
    pytest.skip("Chromium not installed (Debian: apt-get install chromium chromium-driver)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright not installed (pip install playwright)")
pytest.importorskip("fastapi", reason="the page is served by fastapi")


#: EmoDB files (speaker 03, sentence a01/a02) joined into the demo recording: angry,
#: sad, happy, neutral, bored, fearful.
EMODB_DEMO = ["03a01Wa", "03a02Ta", "03a01Fa", "03a01Nc", "03a04Lc", "03a04Ad"]


def _demo_recording(path: Path) -> bool:
    """Write a recording for the page: real EmoDB speech when the corpora are present.

    The corpus files are only read, never copied into the repository.

    Returns
    -------
    bool
        True for real speech, False for the synthetic fallback.
    """
    from conftest import corpora_root

    from emovox.audio import load_audio

    root = corpora_root()
    folder = root / "emodb" / "wav" if root is not None else None
    files = [next(folder.glob(f"{name}.*"), None) for name in EMODB_DEMO] if folder else []
    if files and all(files):
        gap = np.zeros(int(0.4 * 16000), dtype=np.float32)
        parts = [part for f in files for part in (load_audio(f, 16000), gap)]
        sf.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
        return True
    sf.write(path, _speech_like(15.0), 16000, subtype="PCM_16")
    return False


def _speech_like(seconds: float) -> np.ndarray:
    """Aroused, calm, then bright synthetic speech, so a timeline has something to show."""
    parts = [synth_voice(seconds / 3, f0=225, f0_range=0.6, loudness=0.6, seed=1),
             synth_voice(seconds / 3, f0=95, f0_range=0.05, loudness=0.15, seed=2),
             synth_voice(seconds / 3, f0=180, f0_range=0.35, loudness=0.4, seed=3)]
    return np.concatenate(parts)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bool]]:
    """The app on 127.0.0.1, with the packaged model (a synthetic one if it is missing).

    Yields the URL and whether the packaged model is served.
    """
    from emovox.bundle import load_bundle
    from emovox.errors import BundleError
    from emovox.recognizer import Recognizer
    from emovox.serve import create_app

    try:
        bundle: Any = load_bundle()
        packaged = True
    except BundleError:
        bundle, packaged = make_bundle(tmp_path_factory.mktemp("browser")), False
    app = create_app(Recognizer(bundle, n_jobs=1), max_seconds=120)
    with live_server(app) as url:
        yield url, packaged


@pytest.fixture(scope="module")
def mic_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mic") / "voice.wav"
    sf.write(path, _speech_like(6.0), 16000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def browser(mic_file: Path) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        try:
            instance = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=[*FLAGS, f"--use-file-for-fake-audio-capture={mic_file}"])
        except Exception as error:  # e.g. a Chromium too old or too new for Playwright
            pytest.skip(f"Chromium could not be started by Playwright: {error}")
        yield instance
        instance.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_upload_shows_the_same_emotion_as_the_api(server: tuple[str, bool], page: Any,
                                                  tmp_path: Path) -> None:
    httpx = _http()
    url, packaged = server
    clip = tmp_path / "emotions.wav"
    real = _demo_recording(clip)
    api = httpx.post(f"{url}/api/predict", timeout=120,
                     files={"file": (clip.name, clip.read_bytes(), "audio/wav")}).json()
    model = httpx.get(f"{url}/api/model", timeout=30).json()

    page.goto(url)
    page.wait_for_function("document.getElementById('model-badge').textContent"
                           ".includes('emotions')")
    page.set_input_files("#file-input", str(clip))
    page.wait_for_selector("#result:not([hidden])")
    assert page.get_attribute("#result", "data-emotion") == api["emotion"]
    assert page.text_content("#top-emotion") == api["emotion"]
    bars = page.query_selector_all("#bars .bar")
    assert bars[0].get_attribute("data-class") == api["emotion"]
    assert len(bars) == len(api["classes"])
    if model["timeline"] and api["duration"] >= 12:  # the page's threshold for a timeline
        page.wait_for_selector("#timeline-card:not([hidden]) svg")
        if real:  # the voice detector may call synthetic audio non-speech
            assert page.query_selector_all("#timeline svg polyline")
    page.wait_for_timeout(700)  # let the bars finish their animation
    # A test run leaves the tracked file alone; the README's picture (the packaged model
    # on real speech) is refreshed only on request, with EMOVOX_UPDATE_SCREENSHOT=1.
    target = tmp_path / "screenshot.png"
    page.screenshot(path=str(target), full_page=True)
    assert target.stat().st_size > 10_000
    if UPDATE_SCREENSHOT:
        if not (real and packaged):
            pytest.fail("EMOVOX_UPDATE_SCREENSHOT=1 needs the packaged model and the "
                        "EmoDB corpus (the README's picture shows real speech)")
        shutil.copyfile(target, SCREENSHOT)


def test_guided_session_with_a_fake_microphone(server: tuple[str, bool], page: Any,
                                               tmp_path: Path) -> None:
    page.goto(f"{server[0]}/?tab=session")
    page.wait_for_function("document.getElementById('model-badge').textContent"
                           ".includes('emotions')")
    page.fill("#session-prompts", "🎉 You won a prize!\n🌧️ It is raining again.")
    page.fill("#session-seconds", "2")
    page.fill("#session-pause", "0")
    page.click("#session-start")
    page.wait_for_selector("#session-stage:not([hidden])")
    page.wait_for_selector("#session-results-card:not([hidden])")
    results = page.query_selector_all("#session-results .session-result")
    assert len(results) == 2
    classes = set(page.evaluate("fetch('/api/model').then(r => r.json())")["classes"])
    for result, prompt in zip(results, ["You won a prize!", "It is raining again."],
                              strict=True):
        assert result.get_attribute("data-error") is None, result.get_attribute("data-error")
        assert result.get_attribute("data-emotion") in classes
        assert prompt in result.inner_text()
    page.screenshot(path=str(tmp_path / "session.png"), full_page=True)


def test_no_microphone_is_explained(server: tuple[str, bool], page: Any) -> None:
    page.add_init_script("""
        navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException('Requested device not found', 'NotFoundError'));
    """)
    page.goto(server[0])
    page.click("#record-btn")
    page.wait_for_selector("#alert:not([hidden])")
    assert "No microphone was found" in page.text_content("#alert-text")
