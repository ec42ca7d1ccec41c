"""Torch modules with Deeplearning4j 0.9.x (CPU) semantics, and the registry entries that describe them."""
