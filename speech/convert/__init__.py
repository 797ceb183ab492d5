"""Model format converters (``speech convert``): write a model in another engine's format."""
