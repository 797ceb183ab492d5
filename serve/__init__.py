"""Ray Serve applications over the model classes of :mod:`speech`."""
