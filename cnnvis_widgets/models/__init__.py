"""Models: the Probe over any Flax model, and the offline zoo."""
