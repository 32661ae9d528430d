"""deepvision: reverse image search from the command line (CNN features + FAISS)."""

from importlib.metadata import PackageNotFoundError, version

from deepvision.extras import DISTRIBUTION

try:
    __version__ = version(DISTRIBUTION)  # deepvision-search: the name on the package index
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
