"""Public generators of synthetic inputs, for tests, benchmarks and offline trials.

- `emoprobe.testing.models`: tiny randomly initialised checkpoints of every supported upstream
  family, saved with `save_pretrained`, and small synthetic corpora with a manifest.
- `emoprobe.testing.layouts`: miniature corpora in the exact on-disk layouts of IEMOCAP,
  MSP-IMPROV and EmotionTalk.
- `emoprobe.testing.embeddings`: pooled-embedding corpora with a planted layer-wise signal.
"""
