"""Perennial: continuous training for tabular ML, in four layers (core, adapters, pipeline, app)."""
