"""Data that tests, benchmarks and training share.

- ``objsearch.datasets.synthetic``: the synthetic COCO-format shapes set (instances, captions,
  RefCOCO-style refs) that training, ``objsearch bench coco-search`` and the tests use;
  ``python -m objsearch.datasets.synthetic OUT`` writes one.
- ``objsearch.datasets.scenes``: small scenes of coloured rectangles on white with their
  annotations, for fast tests and the indexing benchmarks; ``objsearch.datasets.blob_embedder``
  is the exact embedder of those scenes (``--model objsearch.datasets.blob_embedder:build``).
- ``objsearch.datasets.coco_files``: reads COCO-format files (yours or the synthetic set's),
  checked field by field.

The generated ones are deterministic: the same arguments always write the same bytes.
"""
