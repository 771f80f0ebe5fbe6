"""Data in: the dataset registry and file formats, downloading with checksums and a cache,
safe extraction, interactions files of one's own (CSV, TSV, Parquet), and preprocessing
(repeated rows, filters, splits, side features) into the frames training reads.

Nothing here imports MLflow: the steps log what these functions return.
"""
