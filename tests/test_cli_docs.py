"""The CLI reference pages (docs/reference/cli/) are what scripts/gen_cli_docs.py makes from the
Typer app now: an option added, renamed or re-worded without regenerating fails here."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", REPO / "scripts/gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_generated_from_the_current_app():
    gen = _generator()
    stale = gen.stale(gen.render())
    assert not stale, ("CLI reference out of date; run `python scripts/gen_cli_docs.py`: "
                       f"{[str(p.relative_to(REPO)) for p in stale]}")


def test_every_option_of_every_command_is_on_its_page():
    gen = _generator()
    group = gen._command()
    pages = gen.render()
    for name, command in group.commands.items():
        page = pages[gen._page(name)]
        for cmd in (command, *gen._subcommands(command).values()):  # `dupes decide`, ...
            for param in cmd.params:
                if getattr(param, "param_type_name", "") == "option" and not param.hidden:
                    assert f"`{param.opts[0]}`" in page, (name, cmd.name, param.opts)
        for sub in gen._subcommands(command):
            assert f"## deepvision {name} {sub}" in page


def test_a_new_option_makes_the_check_fail(monkeypatch):
    gen = _generator()
    group = gen._command()
    search = group.commands["search"]
    extra = copy.copy(next(p for p in search.params if p.opts == ["--qe"]))
    extra.opts, extra.name, extra.help = ["--brand-new-option"], "brand_new_option", "New."
    monkeypatch.setattr(search, "params", [*search.params, extra])
    monkeypatch.setattr(gen, "_command", lambda: group)
    assert gen._page("search") in gen.stale(gen.render())
