"""`eval` reports: a table on the terminal, or one JSON document (schemas/eval.schema.json)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from deepvision.output.console import display_path, markup, stdout_console
from deepvision.services.eval_metrics import Scores
from deepvision.services.evaluate import EvalResult
from deepvision.services.synthetic import Calibration


def _scores_json(s: Scores) -> dict:
    return {"queries": s.queries, "mAP": round(s.mean_ap, 6),
            **{f"recall@{k}": round(v, 6) for k, v in s.recall.items()},
            **{f"precision@{k}": round(v, 6) for k, v in s.precision.items()}}


def _calibration_json(c: Calibration) -> dict:
    return {"target_precision": c.target_precision, "threshold": c.threshold,
            "precision": round(c.precision, 6), "recall": round(c.recall, 6),
            "recall_by_edit": {e: round(v, 6) for e, v in c.recall_by_edit.items()},
            "true_pairs": c.true_pairs, "other_pairs": c.other_pairs,
            "copy_tier_by_edit": {e: round(v, 6) for e, v in c.copy_tier_by_edit.items()},
            "other_pairs_called_copy": c.other_pairs_called_copy}


def eval_json(result: EvalResult, calibration: Calibration | None = None) -> str:
    """One JSON document: the summary lines, every query, every failure (and with --synthetic
    the dupes calibration)."""
    return json.dumps({
        "source": result.source,
        "model": result.model,
        "weights": result.weights,
        "weights_identity": result.weights_identity,
        "device": result.device,
        "descriptor": result.descriptor,
        "protocol": result.protocol,
        "ks": list(result.ks),
        "images": result.images,
        "groups": result.groups,
        "distractors": result.distractors,
        "overall": _scores_json(result.overall),
        "by_edit": {s.name: _scores_json(s) for s in result.by_edit},
        "by_group": {s.name: _scores_json(s) for s in result.by_group},
        "queries": [
            {"path": q.path, "group": q.group, "edit": q.edit, "relevant": q.relevant,
             "ap": round(q.ap, 6), **{f"recall@{k}": v for k, v in q.recall.items()},
             **{f"precision@{k}": round(v, 6) for k, v in q.precision.items()},
             "first_hit": q.first_hit, "top": q.top_path, "top_score": round(q.top_score, 6)}
            for q in result.queries],
        "failures": [{"path": f.path, "reason": f.reason, "message": f.message}
                     for f in result.failures],
        "failed": len(result.failures),
        "embed_seconds": round(result.embed_seconds, 3),
        "seconds": round(result.seconds, 3),
        "images_per_second": round(result.images / result.embed_seconds, 2)
        if result.embed_seconds else None,
        **({"calibration": _calibration_json(calibration)} if calibration else {}),
    }, indent=2)


def print_eval_table(result: EvalResult, max_misses: int = 30,
                     calibration: Calibration | None = None) -> None:
    """Overall, per-edit and per-group tables, then the queries that missed at rank 1."""
    out = stdout_console()

    def scores_table(title: str, rows: Sequence[Scores], first: str) -> Table:
        table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
        table.add_column(first)
        for col in ("queries", "mAP", *(f"R@{k}" for k in result.ks),
                    *(f"P@{k}" for k in result.ks)):
            table.add_column(col, justify="right")
        for s in rows:
            table.add_row(markup(s.name), str(s.queries), f"{s.mean_ap:.4f}",
                          *(f"{s.recall[k]:.4f}" for k in result.ks),
                          *(f"{s.precision[k]:.4f}" for k in result.ks))
        return table

    out.print(f"{escape(display_path(result.source))}: {result.images} images, {result.groups} "
              f"groups, {result.distractors} distractors, {len(result.queries)} queries; "
              f"model {result.model} ({markup(result.weights)}) on {result.device}")
    out.print("R@k: a relevant image in the top k (hit rate); P@k: relevant share of the top k")
    out.print(scores_table("overall", [result.overall], ""))
    if result.by_edit:
        out.print()
        out.print(scores_table("by edit", result.by_edit, "edit"))
    out.print()
    out.print(scores_table("by group", result.by_group, "group"))
    misses = sorted((q for q in result.queries if q.first_hit != 1),
                    key=lambda q: (-(q.first_hit or result.images), q.path))
    if misses:
        out.print()
        table = Table(title=f"missed at rank 1: {len(misses)}", title_justify="left",
                      show_edge=False, pad_edge=False)
        for col in ("query", "first hit", "rank 1 instead", "score"):
            table.add_column(col, justify="right" if col in ("first hit", "score") else "left")
        for q in misses[:max_misses]:
            table.add_row(escape(display_path(q.path)), str(q.first_hit or "-"),
                          escape(display_path(q.top_path)), f"{q.top_score:.4f}")
        out.print(table)
        if len(misses) > max_misses:
            out.print(f"... and {len(misses) - max_misses} more (--format json lists them all)")
    if calibration is not None:
        out.print()
        print_calibration(calibration)


def print_calibration(c: Calibration) -> None:
    out = stdout_console()
    if c.threshold is None:
        out.print(f"dupes: no threshold keeps precision {c.target_precision} on these photos "
                  f"({c.true_pairs} true pairs, {c.other_pairs} others)")
        return
    out.print(f"dupes: suggested --threshold {c.threshold:.4f} (precision {c.precision:.4f} "
              f">= {c.target_precision}, finds {c.recall:.1%} of the {c.true_pairs} copy pairs; "
              f"{c.other_pairs} other pairs)")
    table = Table(title="copies dupes links to their original at that threshold",
                  title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("edit")
    table.add_column("found", justify="right")
    table.add_column("called copy", justify="right")
    for edit, share in c.recall_by_edit.items():
        tier = c.copy_tier_by_edit.get(edit)
        table.add_row(markup(edit), f"{share:.3f}", "-" if tier is None else f"{tier:.3f}")
    out.print(table)
    if c.copy_tier_by_edit:
        out.print(f"copy/similar: {c.other_pairs_called_copy} pair(s) of different photos above "
                  "the threshold called copy (0 is right); 'called copy' is the share of a "
                  "kind's linked copies the copy tier keeps (`dupes` without --similar)")
