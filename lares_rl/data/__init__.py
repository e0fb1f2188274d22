"""Data pipeline: loaders, k-core filtering, id remapping, leave-one-out split, cached processing."""
