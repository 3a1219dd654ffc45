"""jaxtalk: StableFace (jitter-free talking-face generation) and the Motion Stability Index."""

__version__ = "0.1.0"
