"""Built-in vision vertex types beyond the tutorial's: upsampling, transposed, depthwise and separable
convolution, zero padding, cropping, space-to-depth and depth-to-space (DL4J 1.0 semantics, see docs/spec.md)."""
from __future__ import annotations
