"""Data in: the dataset registry and file formats, downloading with checksums and a cache,
safe extraction, and preprocessing (filters, ID indexing, splits) into the frames training reads.

Nothing here imports MLflow: the steps log what these functions return.
"""
