"""lmkit: build vocabularies, train and score comparable language models."""

__version__ = "0.1.0"
