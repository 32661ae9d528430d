"""Building the Embedder a service needs: an index's own model and weights, or a chosen one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deepvision.models.registry import get_spec, weights_for_index
from deepvision.pipeline.embedder import Embedder, EmbedOptions
from deepvision.pipeline.network import NetworkStep, TextStep
from deepvision.store.manifest import Manifest

# How a service gets its Embedder, only once it knows it needs one (an `index` run with nothing
# new loads no model). Tests pass a factory that builds a stub network.
EmbedderFactory = Callable[[Manifest, "Path | None", EmbedOptions], Embedder]


def index_embedder(manifest: Manifest, weights_file: Path | None, opts: EmbedOptions,
                   step: NetworkStep | None = None, text_step: TextStep | None = None) -> Embedder:
    """The model, weights and descriptor `manifest` records, and no others: a different file
    would put query vectors in another space than the indexed ones. step, text_step: stand-ins
    for the inference functions (tests; bind them with functools.partial)."""
    weights = weights_for_index(manifest.model, manifest.weights, manifest.weights_path,
                                weights_file)
    return Embedder.load(get_spec(manifest.model), weights, manifest.descriptor, opts, step,
                          text_step)
