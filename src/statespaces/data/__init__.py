"""Offline datasets, one module per source."""
from .digits import SequenceData, load_digits_sequences

DATASETS = {
    "digits": lambda **kw: load_digits_sequences(permute=False, **kw),
    "pdigits": lambda **kw: load_digits_sequences(permute=True, **kw),
}

__all__ = ["SequenceData", "load_digits_sequences", "DATASETS"]
