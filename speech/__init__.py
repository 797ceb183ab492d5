"""speech: corpus-scale speech recognition and synthesis on Ray."""

__version__ = "0.1.0"
