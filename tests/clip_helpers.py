"""A tiny open_clip model for the tests: the real open_clip code path (architecture config,
create_model, load_checkpoint, tokenizer, text tower) at a size CI builds in a blink.

Its architecture config lives in tests/fixtures/openclip/ and is registered with open_clip, and
its deepvision row with the registry, only by the tests: nothing ships it, nothing defaults to
it, and it has no weights but the random state dict a test saves and passes with --weights.
`python tests/clip_helpers.py ARGS` is the real deepvision CLI with that row registered (for
the tests that need a real process, e.g. `serve`).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "fixtures" / "openclip" / "deepvision-test-tiny.json"
ARCH = CONFIG.stem
MODEL = "clip-tiny-test"
DIM = 32


def tiny_spec():
    """The registry row, made by the same factory as the shipped CLIP rows (no tag: weights
    only from --weights)."""
    import open_clip

    from deepvision.models.registry import clip_spec

    if ARCH not in open_clip.list_models():
        open_clip.add_model_config(CONFIG)
    return clip_spec(MODEL, DIM, "tiny open_clip model, tests only", ARCH, None)


def register() -> None:
    from deepvision.models import registry

    registry.REGISTRY[MODEL] = tiny_spec()


def save_random_weights(path: Path, seed: int = 0) -> Path:
    """A state dict of the tiny model, randomly initialised with `seed` (deterministic)."""
    import open_clip
    import torch

    tiny_spec()  # registers the architecture with open_clip
    torch.manual_seed(seed)
    net = open_clip.create_model(ARCH, pretrained=None)
    torch.save(net.state_dict(), path)
    return path


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    register()
    from deepvision.cli import main

    sys.argv[0] = "deepvision"
    main()
