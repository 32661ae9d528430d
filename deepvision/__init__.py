"""deepvision: reverse image search from the command line (CNN features + FAISS)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("deepvision")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
