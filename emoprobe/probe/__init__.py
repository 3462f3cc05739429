"""Stage two: linear probes over cached embeddings, WAR/UAR tables, plots."""
