"""Stage one: run an upstream once over a corpus and cache pooled per-layer embeddings."""
