"""Training data: loaders for real dataset formats, the synthetic generator, and source mixing.

Every loader yields :class:`training.data.sample.Sample`; the collate function in
``training.data.collate`` turns a list of samples into model inputs and per-image targets.
"""
