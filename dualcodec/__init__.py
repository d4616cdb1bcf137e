"""dualcodec: jointly learned dual-layer video coding.

A learned downsampler feeds a standard codec (the base layer); a learned side stream
and a spatially varying upsampler rebuild full resolution. Importing this package
loads nothing heavy: PyAV, DeepSpeed and DALI are imported where they are used.
"""

__version__ = "0.2.0"
