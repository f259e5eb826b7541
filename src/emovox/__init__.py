"""emovox: speech emotion recognition with honest, speaker-independent evaluation."""

from emovox.audio import load_audio
from emovox.errors import AudioError, BundleError, ConfigError, CorpusError, EmovoxError

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "BundleError",
    "ConfigError",
    "CorpusError",
    "EmovoxError",
    "__version__",
    "load_audio",
]
