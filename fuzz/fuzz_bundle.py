"""Fuzz emovox.bundle.load_bundle on a bundle whose bundle.json / reference_stats.npz vary.

The packaged default bundle is copied once to a temporary folder; each input replaces
one of its two data files and loads the folder with :func:`emovox.bundle.load_bundle`,
then builds what a loaded bundle is used for (its feature extractor and a
``Recognizer``). The first input byte picks the mode:

0. raw bytes as ``bundle.json``
1. raw bytes as ``reference_stats.npz``
2. the valid ``bundle.json`` with one value (anywhere in the tree) replaced by a
   fuzzed value of any JSON type, or deleted
3. a valid ``.npz`` whose ``count`` / ``mean`` / ``var`` have fuzzed shapes, dtypes and
   values (NaN, inf, negative, strings, missing keys)

The only acceptable failures are :class:`~emovox.errors.EmovoxError` subclasses
(``BundleError`` from loading, ``ConfigError`` from a feature spec) with a one-line
message; anything else is a finding.

Run (see fuzz/README.md)::

    .venv/bin/python fuzz/fuzz_bundle.py -max_total_time=300 /tmp/fuzz-bundle
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import atheris
import numpy as np

# Only emovox: instrumenting torch and scikit-learn would take minutes and add noise.
with atheris.instrument_imports(include=["emovox"]):
    from emovox.bundle import default_bundle_path, load_bundle
    from emovox.errors import EmovoxError
    from emovox.recognizer import Recognizer

WORK = Path(tempfile.mkdtemp(prefix="emovox-fuzz-bundle-")) / "bundle"
shutil.copytree(default_bundle_path(), WORK)
META = WORK / "bundle.json"
STATS = WORK / "reference_stats.npz"
GOOD_META = META.read_bytes()
GOOD_STATS = STATS.read_bytes()
#: Values a fuzzed JSON node may take besides fuzzed strings and numbers.
ODD_VALUES: list[Any] = [None, True, False, [], {}, 0, -1, 1e308, "", "none", "speaker",
                         [None], {"": None}, 2**63, -(2**63) - 1]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indices) to a node of a JSON tree, the root excluded."""
    found: list[tuple[Any, ...]] = []
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found += _paths(child, (*prefix, key))
    return found


def _fuzzed_value(fdp: atheris.FuzzedDataProvider) -> Any:
    kind = fdp.ConsumeIntInRange(0, 4)
    if kind == 0:
        return fdp.PickValueInList(ODD_VALUES)
    if kind == 1:
        return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 40))
    if kind == 2:
        return fdp.ConsumeInt(8)
    if kind == 3:
        return fdp.ConsumeRegularFloat()
    return [_fuzzed_value(fdp) for _ in range(fdp.ConsumeIntInRange(0, 3))]


def mutated_meta(fdp: atheris.FuzzedDataProvider) -> bytes:
    """The valid bundle.json with one node replaced or deleted."""
    meta = json.loads(GOOD_META)
    paths = _paths(meta)
    path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
    parent = meta
    for key in path[:-1]:
        parent = parent[key]
    if fdp.ConsumeIntInRange(0, 5) == 0:
        del parent[path[-1]]
    else:
        parent[path[-1]] = _fuzzed_value(fdp)
    return json.dumps(meta).encode()


def _fuzzed_array(fdp: atheris.FuzzedDataProvider) -> np.ndarray:
    dtype = fdp.PickValueInList(["float64", "float32", "int64", "bool", "U3", "complex128",
                                 "float16", "uint8"])
    shape = tuple(fdp.ConsumeIntInRange(0, 4) for _ in range(fdp.ConsumeIntInRange(0, 2)))
    if fdp.ConsumeBool():  # the real feature size, so deeper checks are reached
        shape = (1920,)
    values = [fdp.PickValueInList([0.0, -1.0, 1.0, np.nan, np.inf, -np.inf, 1e300, 1e-300])
              for _ in range(4)]
    size = int(np.prod(shape)) if shape else 1
    flat = np.resize(np.array(values), size)
    with np.errstate(all="ignore"):
        return flat.astype(dtype).reshape(shape)


def mutated_stats(fdp: atheris.FuzzedDataProvider) -> bytes:
    """A valid .npz with fuzzed (or missing) count, mean and var arrays."""
    arrays = {}
    for key in ("count", "mean", "var"):
        if fdp.ConsumeIntInRange(0, 7) == 0:
            continue  # missing
        arrays[key] = _fuzzed_array(fdp)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def check_message(error: EmovoxError) -> None:
    message = str(error)
    if not message or "\n" in message.strip():
        raise AssertionError(f"badly formed {type(error).__name__}: {message!r}")


def test_one_input(data: bytes) -> None:
    """Load the bundle with one data file fuzzed; only EmovoxError may come out."""
    fdp = atheris.FuzzedDataProvider(data)
    mode = fdp.ConsumeIntInRange(0, 3)
    meta, stats = GOOD_META, GOOD_STATS
    if mode == 0:
        meta = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == 1:
        stats = fdp.ConsumeBytes(fdp.remaining_bytes())
    elif mode == 2:
        meta = mutated_meta(fdp)
    else:
        stats = mutated_stats(fdp)
    META.write_bytes(meta)
    STATS.write_bytes(stats)
    try:
        bundle = load_bundle(WORK)
        bundle.extractor()
        Recognizer(bundle, n_jobs=1)
    except EmovoxError as error:
        check_message(error)


def main() -> None:
    """Seed an empty corpus folder with one input per mode, then fuzz."""
    folders = [a for a in sys.argv[1:] if not a.startswith("-")]
    if folders and not any(Path(folders[0]).glob("*")):
        seeds = Path(folders[0])
        seeds.mkdir(parents=True, exist_ok=True)
        # ConsumeIntInRange(0, 3) reads one byte: its value mod 4 is the mode.
        (seeds / "meta").write_bytes(b"\x00" + GOOD_META)
        (seeds / "stats").write_bytes(b"\x01" + GOOD_STATS)
        (seeds / "meta-node").write_bytes(b"\x02" + bytes(range(64)))
        (seeds / "stats-arrays").write_bytes(b"\x03" + bytes(range(64)))
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
