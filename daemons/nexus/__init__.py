"""Nexus: one distribution, five daemons on Trio, one compliance engine, one audit pipeline."""
