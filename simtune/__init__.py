"""simtune: choose a fast DeepSpeed training configuration for the hardware you have."""

__version__ = "0.1.0"
