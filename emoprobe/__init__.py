"""emoprobe: how much emotion information a speech model carries, per layer and corpus."""

__version__ = "0.1.0"
