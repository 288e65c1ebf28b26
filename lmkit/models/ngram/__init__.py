"""n-gram language models: counting, smoothing, scoring and ARPA import/export (numpy only)."""

from .arpa import ArpaModel, is_arpa_path, load_arpa, write_arpa
from .model import NgramConfig, NgramModel

__all__ = ["NgramConfig", "NgramModel", "ArpaModel", "load_arpa", "write_arpa", "is_arpa_path"]
