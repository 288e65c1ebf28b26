"""Corpora, tokenisation, vocabularies and batching."""
