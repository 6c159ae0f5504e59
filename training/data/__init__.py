"""Training data: loaders for real dataset formats and source mixing. The synthetic set's generator is
shared with tests and benchmarks, so it lives in the core: ``objsearch.datasets.synthetic``.

Every loader yields :class:`training.data.sample.Sample`; the collate function in
``training.data.collate`` turns a list of samples into model inputs and per-image targets.
"""
