"""lpm: the Large Performance Model (LPM 1.0), an open implementation."""

__version__ = "0.1.0"
