"""vlabench: a benchmark suite for vision-language-action policies."""
__version__ = "0.1.0"
