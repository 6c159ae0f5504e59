"""The index on disk: layout and manifest, Parquet shards, FAISS vectors, DuckDB catalog, writer."""
