"""hsl-demo: language-based product image retrieval, explained."""

__version__ = "0.1.0"
