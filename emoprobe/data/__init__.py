"""Stage zero: corpora as distributed -> validated JSONL manifests."""
