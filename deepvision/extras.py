"""How to install an optional part of deepvision, worded the same way in every message.

The distribution is `deepvision-search` (`deepvision` on the package index is another
project); the import name and the command stay `deepvision`. An extra's packages are read from
this installation's own metadata, so a message names exactly what `pyproject.toml` asks for.
"""
from __future__ import annotations

import re
from importlib import metadata

DISTRIBUTION = "deepvision-search"

_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def extra_requirements(extra: str) -> list[str]:
    """The requirements of one extra as installed metadata lists them ([] when unknown)."""
    try:
        requires = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:  # run from a checkout without installing it
        return []
    found = []
    for line in requires:
        spec, _, marker = line.partition(";")
        names = _EXTRA.findall(marker)
        if extra in names and not spec.strip().startswith(DISTRIBUTION):
            found.append(spec.strip().replace(" ", ""))
    return found


def install_hint(extra: str) -> str:
    """`pip install …` for an extra: its packages, and the extra's name in this project."""
    packages = " ".join(f"'{r}'" for r in extra_requirements(extra))
    if packages:
        return f"pip install {packages} (the extra {DISTRIBUTION}[{extra}])"
    return (f"install the extra {DISTRIBUTION}[{extra}] "
            f"(pip install '.[{extra}]' in deepvision's checkout)")
