"""Deep SSM models built from residual SSM blocks."""
from .classifier import SequenceClassifier

__all__ = ["SequenceClassifier"]
