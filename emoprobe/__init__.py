"""emoprobe: how much emotion information does a speech model carry, in which layer, on which corpus."""

__version__ = "0.1.0"
