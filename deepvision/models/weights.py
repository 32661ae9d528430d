"""Weights files: where a model's weights are, their identity (what an index records), loading."""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from deepvision.errors import WeightsUnavailableError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Weights:
    path: Path
    identity: str  # "sha256:<16 hex>", what the manifest compares
    origin: str  # human-readable: where they came from


def file_identity(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()[:16]}"


def user_file(path: Path) -> Weights:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file not found: {path} (check --weights)")
    return Weights(path.resolve(), file_identity(path), f"file {path.name}")


def load_state(net: torch.nn.Module, weights: Weights) -> None:
    import torch

    try:
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        net.load_state_dict(state)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsUnavailableError(
            f"cannot load weights {weights.path}: {first} (is it a state dict for this model?)"
        ) from exc


def reachable(url: str, timeout: float = 2.0) -> bool:
    """Quick check before a download so that `auto` never hangs on a machine without internet."""
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


