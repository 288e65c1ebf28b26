"""Known corpora: the registry (manifest), safe downloads into the XDG cache, and deterministic splitting.

registry.py is plain data; download.py fetches and verifies one file; unpack.py extracts archives safely;
store.py publishes a corpus folder in the cache; split.py cuts one raw file into train/valid/test."""
