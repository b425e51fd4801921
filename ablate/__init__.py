"""ablate: reproduce incremental trick tables of deep-learning papers."""

__version__ = "0.1.0"
