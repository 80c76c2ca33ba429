"""The small networks the lessons train, one module per model."""

from sdlearn.models.classifier import ClassifierConfig, SmallClassifier

__all__ = ["ClassifierConfig", "SmallClassifier"]
