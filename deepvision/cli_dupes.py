"""`deepvision dupes` and its review commands (decide, apply, undo, export, import).

A Typer group that still lists when called alone (`invoke_without_command`), so every existing
`deepvision dupes [options]` call works as before. The shared options and error handling come
from cli_common.py; cli.py adds this group to the app.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from deepvision.cli_common import (
    FilterOptions,
    Format,
    HtmlFile,
    IndexDir,
    Name,
    OutputFormat,
    Quiet,
    Wait,
    emit,
    exit_on_errors,
    gallery,
    index_store,
    shared_options,
)
from deepvision.errors import ExitCode, UsageError
from deepvision.output.console import ConsoleReporter
from deepvision.output.helpformat import Command, Group
from deepvision.services.dupes import DEFAULT_THRESHOLD as DEFAULT_DUPE_THRESHOLD

dupes_app = typer.Typer(cls=Group, short_help="Duplicate groups (exact, copy; --similar too) "
                        "and their review.", help="Groups of duplicate images inside an index, "
                        "and their review: decide, apply, undo.")

Threshold = Annotated[float, typer.Option(
    min=-1.0, max=1.0, metavar="SCORE", help="Cosine similarity above which two images are "
    "near-duplicates (default measured for efficientnet-lite0; see README).")]
KeepRules = Annotated[Optional[list[str]], typer.Option(
    "--keep", metavar="RULE", help="Which member to keep: largest, highest-resolution, oldest, "
    "newest, shortest-path or in:FOLDER; repeatable, the first rule wins and the next break "
    "its ties (default: largest, oldest, shortest-path).", show_default=False)]


def _rules(keep: list[str] | None) -> tuple[str, ...]:
    from deepvision.services.review import parse_rules

    return parse_rules(keep or [])


@dupes_app.callback(invoke_without_command=True)
@shared_options(FilterOptions, last=("quiet",))
def dupes(
    ctx: typer.Context,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    threshold: Threshold = DEFAULT_DUPE_THRESHOLD,
    output: OutputFormat = Format.table,
    html: HtmlFile = None,
    keep: KeepRules = None,
    show_all: Annotated[bool, typer.Option(
        "--all", help="Also list the groups a decision resolved.")] = False,
    similar: Annotated[bool, typer.Option(
        "--similar", help="Also group similar shots (another photo of the same scene: a burst, "
        "a stereo pair), each with the copies it is directly similar to; by default groups "
        "hold exact and copy pairs only (decide and apply act on those).")] = False,
    verify: Annotated[bool, typer.Option(
        "--verify/--no-verify", help="Tell copies from similar shots with local features "
        "(--no-verify: every pair above --threshold is a copy).")] = True,
    quiet: Quiet = False,
    *,
    opts: FilterOptions,
) -> None:
    """Groups of duplicate images inside an index (exact and copy; --similar: similar shots
    too), largest first, each with a stable id and the proposed keeper (groups resolved by a
    decision are left out)."""
    if ctx.invoked_subcommand is not None:
        return
    from deepvision.output import render
    from deepvision.services.review import review_dupes

    rep = ConsoleReporter(quiet=quiet)
    with exit_on_errors(rep):
        result = review_dupes(index_store(index_dir, name), threshold, _rules(keep), show_all,
                              similar, verify, opts.filter())
    emit(result, output, html, rep, {"json": render.dupes_json, "csv": render.dupes_csv,
                                      "table": render.print_dupes_table,
                                      "html": gallery(render.dupes_html)})


@dupes_app.command(cls=Command,
                   short_help="Record a decision on one group (keep, not duplicates, later).")
def decide(
    group: Annotated[str, typer.Argument(help="The group's id, as `deepvision dupes` lists it.")],
    keep: Annotated[Optional[list[Path]], typer.Option(
        "--keep", metavar="PATH",
        help="Keep this member (repeatable); the others go at `dupes apply`.",
        show_default=False)] = None,
    not_duplicates: Annotated[bool, typer.Option(
        "--not-duplicates", help="The group (or --member) is not a set of duplicates.")] = False,
    member: Annotated[Optional[Path], typer.Option(
        "--member", metavar="PATH",
        help="With --not-duplicates: only this member is not a duplicate of the "
        "others; the rest stays to review.", show_default=False)] = None,
    later: Annotated[bool, typer.Option("--later", help="Decide later.")] = False,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    threshold: Threshold = DEFAULT_DUPE_THRESHOLD,
) -> None:
    """Record a decision on one group: keep some members, not duplicates, or later."""
    from deepvision.output.review import decision_text
    from deepvision.services.review import DecideRequest
    from deepvision.services.review import decide as record
    from deepvision.store.decisions import Verdict

    rep = ConsoleReporter()
    with exit_on_errors(rep):
        if sum([bool(keep), not_duplicates, later]) != 1:
            raise UsageError("give exactly one of --keep PATH, --not-duplicates, --later")
        if member is not None and not not_duplicates:
            raise UsageError("--member goes with --not-duplicates")
        verdict = (Verdict.KEEP if keep else Verdict.LATER if later
                   else Verdict.NOT_DUPLICATES)
        done = record(index_store(index_dir, name), DecideRequest(
            group=group, verdict=verdict, keep=tuple(map(str, keep or [])),
            member=str(member) if member else None, threshold=threshold))
    typer.echo(decision_text(done))


@dupes_app.command(cls=Command,
                   short_help="Carry out the decisions on the files (journaled; --dry-run).")
def apply(
    action: Annotated[str, typer.Option(
        "--action", metavar="ACTION", help="trash, move-to DIR, hardlink, symlink or delete: "
        "what happens to the members a decision does not keep.")],
    target: Annotated[Optional[Path], typer.Argument(
        help="move-to: the folder (files keep their full path below it).",
        show_default=False)] = None,
    keep: KeepRules = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print exactly what would happen; change nothing.")] = False,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    threshold: Threshold = DEFAULT_DUPE_THRESHOLD,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    wait: Wait = False,
) -> None:
    """Carry out the keep decisions (with --keep RULE: first decide the undecided groups by
    the rules). Journaled: `deepvision dupes undo` puts everything back."""
    from deepvision.output.review import apply_json, apply_text
    from deepvision.services.apply import ApplyRequest, apply_decisions, check_request

    rep = ConsoleReporter()
    with exit_on_errors(rep):
        req = ApplyRequest(action=action, target=target, rules=_rules(keep), dry_run=dry_run,
                           threshold=threshold, wait=wait)
        check_request(req)
        report = apply_decisions(index_store(index_dir, name), req)
    typer.echo(apply_json(report) if as_json else apply_text(report))
    if report.skipped:
        raise typer.Exit(int(ExitCode.PARTIAL))


@dupes_app.command(cls=Command,
                   short_help="Put back what `dupes apply` did, or forget a decision.")
def undo(
    journal: Annotated[Optional[Path], typer.Argument(
        help="The apply journal (default: the latest one not undone).", show_default=False)
    ] = None,
    decision: Annotated[bool, typer.Option(
        "--decision", help="Forget the last decision instead (files are not touched).")] = False,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
    wait: Wait = False,
) -> None:
    """Put back what `dupes apply` did (or, with --decision, forget the last decision)."""
    from deepvision.output.review import decision_text, undo_text
    from deepvision.services.apply import undo_apply
    from deepvision.services.review import undo_last_decision

    rep = ConsoleReporter()
    with exit_on_errors(rep):
        if decision:
            gone = undo_last_decision(index_store(index_dir, name), wait)
            typer.echo(f"forgot: {decision_text(gone)}" if gone else "no decision to forget")
            return
        report = undo_apply(index_store(index_dir, name), journal, wait)
    typer.echo(undo_text(report))
    if report.problems:
        raise typer.Exit(int(ExitCode.PARTIAL))


@dupes_app.command("export", cls=Command, short_help="Write the decisions as JSON.")
def export_(
    out: Annotated[Optional[Path], typer.Argument(help="JSON file (default: stdout).",
                                                  show_default=False)] = None,
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
) -> None:
    """Write the decisions as JSON (to apply a review on another machine)."""
    from deepvision.atomic import atomic_write_text
    from deepvision.services.review import export_decisions

    rep = ConsoleReporter()
    with exit_on_errors(rep):
        text = json.dumps(export_decisions(index_store(index_dir, name)), indent=2)
        if out is None:
            typer.echo(text)
        else:
            atomic_write_text(out, text + "\n")


@dupes_app.command("import", cls=Command,
                   short_help="Record the decisions of a `dupes export` file.")
def import_(
    source: Annotated[Path, typer.Argument(help="A `dupes export` JSON file.")],
    index_dir: IndexDir = Path("indexes"),
    name: Name = "default",
) -> None:
    """Record the decisions of a `dupes export` file (matched to groups by content hash)."""
    from deepvision.services.review import decisions_file, import_decisions

    rep = ConsoleReporter()
    with exit_on_errors(rep):
        n = import_decisions(index_store(index_dir, name), decisions_file(source))
    typer.echo(f"imported {n} decision(s)")
