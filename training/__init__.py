"""ObjEmbed training: `python -m training.train` (to be built; see the ObjEmbed issue)."""
