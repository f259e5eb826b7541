"""Acoustic features: extractors by name, a per-file cache, parallel batch extraction.

>>> from emovox.features import get_extractor, extract_many
>>> ext = get_extractor({"name": "mfcc_sequence", "n_mfcc": 40, "duration": 2.5})
>>> ext.output_shape
(79, 40)

Registered extractors: ``mfcc_chroma_mel`` (180), ``mfcc_stats``, ``mfcc_sequence``,
``logmel_sequence``, ``egemaps`` (88), ``compare`` (6373), ``whisper_encoder``,
``whisper_frames``, ``hf_encoder``; built from others: ``preprocessed`` (loudness
normalisation / silence trimming first) and ``fused`` (concatenated parts).
"""

from emovox.features import compose as _compose  # noqa: F401
from emovox.features import hf as _hf  # noqa: F401  (transformers loads on first use)
from emovox.features import smile as _smile  # noqa: F401  (registers the extractors)
from emovox.features import spectral as _spectral  # noqa: F401
from emovox.features import whisper as _whisper  # noqa: F401  (torch loads on first use)
from emovox.features import whisper_frames as _whisper_frames  # noqa: F401
from emovox.features.base import (
    FEATURE_CODE_VERSION,
    FeatureExtractor,
    SequenceExtractor,
    available_extractors,
    get_extractor,
    register_extractor,
)
from emovox.features.cache import FeatureCache, default_cache_root, file_key
from emovox.features.extract import ExtractionResult, extract_many, process_file

__all__ = [
    "FEATURE_CODE_VERSION",
    "ExtractionResult",
    "FeatureCache",
    "FeatureExtractor",
    "SequenceExtractor",
    "available_extractors",
    "default_cache_root",
    "extract_many",
    "file_key",
    "get_extractor",
    "process_file",
    "register_extractor",
]
