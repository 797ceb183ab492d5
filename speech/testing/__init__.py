"""Test support: tiny offline model checkpoints and the sample speech corpus generator."""
