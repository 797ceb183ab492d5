"""Ray Data pipelines that drive the model classes of :mod:`speech` over a corpus."""
