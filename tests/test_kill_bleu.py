"""Tests written to kill the mutants of the bleu module that survived the rest of the suite (docs/testing.md)."""
