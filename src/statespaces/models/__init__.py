"""Deep SSM models built from residual SSM blocks: classifier, forecaster, language model, SaShiMi."""
from .classifier import SequenceClassifier
from .forecast import SSMForecaster
from .generate import filter_logits, sample_logits
from .image import ImageClassifier
from .lm import SSMLanguageModel, SSMStack
from .sashimi import DownPool, FFBlock, SaShiMi, UpPool

__all__ = [
    "SequenceClassifier", "SSMForecaster", "ImageClassifier", "SSMLanguageModel", "SSMStack", "SaShiMi", "DownPool",
    "UpPool", "FFBlock",
    "sample_logits", "filter_logits",
]
