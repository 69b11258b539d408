"""Deep SSM models built from residual SSM blocks: classifier, language model, SaShiMi."""
from .classifier import SequenceClassifier
from .generate import filter_logits, sample_logits
from .image import ImageClassifier
from .lm import SSMLanguageModel, SSMStack
from .sashimi import DownPool, FFBlock, SaShiMi, UpPool

__all__ = [
    "SequenceClassifier", "ImageClassifier", "SSMLanguageModel", "SSMStack", "SaShiMi", "DownPool", "UpPool", "FFBlock",
    "sample_logits", "filter_logits",
]
