"""Metrics (perplexity), generation and BLEU: the only code that turns model outputs into numbers."""
