"""The duplicate review page of `deepvision serve` (`/review`): the shell only.

`/static/review.js` fills it from `GET /api/dupes` (a page of groups at a time, so thousands
of groups load as fast as one page) and records decisions through the same API the CLI's
store answers. Without JavaScript the page says which commands do the same. No inline script
or style: the server's CSP allows only `'self'`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from deepvision.output.web import ICON, header

PAGE = 20  # groups per page: each shows every member's thumbnail side by side
ACTIONS = (("trash", "Move to the trash"), ("move-to", "Move to a folder"),
           ("hardlink", "Replace with hard links"), ("symlink", "Replace with symbolic links"),
           ("delete", "Delete"))
KEYS = (("1 … 9", "keep that file, the others are duplicates"),
        ("n", "not duplicates"), ("l", "decide later"), ("u", "undo the last decision"),
        ("j / k", "next / previous group"))


def page(stats: Mapping[str, Any], per_page: int = PAGE) -> str:
    name = os.path.basename(str(stats.get("index", "")).rstrip("/")) or "index"
    return ('<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            '<meta name="color-scheme" content="light dark">'
            '<title>Duplicate review · deepvision</title>'
            f'<link rel="icon" href="{ICON}">'
            '<link rel="stylesheet" href="/static/app.css">'
            '<link rel="stylesheet" href="/static/review.css">'
            '<script src="/static/review.js" defer></script></head>\n'
            f'<body>{header(name, stats)}<main id="review" data-page="{int(per_page)}">'
            f'{_intro()}{_noscript()}'
            '<p id="review-status" class="status" role="status" aria-live="polite" '
            'data-state="loading">Loading the groups…</p>'
            '<div id="groups"></div>'
            '<nav id="pager" class="pager" aria-label="pages" hidden>'
            '<button type="button" id="prev">← Previous</button>'
            '<span id="page-info"></span>'
            '<button type="button" id="next">Next →</button></nav>'
            f'{_apply_panel()}</main>'
            '<footer class="foot"><a href="/">search</a><span aria-hidden="true">·</span>'
            '<a href="/docs">API</a></footer></body></html>\n')


def _intro() -> str:
    keys = "".join(f"<div><dt><kbd>{k}</kbd></dt><dd>{what}</dd></div>" for k, what in KEYS)
    return ('<section class="review-intro"><h2>Duplicate review</h2>'
            '<p>Decide each group: the file to keep, or that they are not duplicates, or later. '
            'Decisions are stored in the index and nothing changes on disk until you apply '
            'them below, after seeing the list of what would happen.</p>'
            '<label class="show-all"><input type="checkbox" id="show-all"> '
            'show resolved groups too</label>'
            f'<dl class="keys" aria-label="keyboard shortcuts">{keys}</dl></section>')


def _noscript() -> str:
    return ('<noscript><p class="status" data-state="error">This page needs JavaScript. '
            'The same review from a terminal: <code>deepvision dupes</code> lists the groups, '
            '<code>deepvision dupes decide ID --keep PATH</code> decides one, '
            '<code>deepvision dupes apply --action trash --dry-run</code> shows what would '
            'happen.</p></noscript>')


def _apply_panel() -> str:
    options = "".join(f'<option value="{v}">{label}</option>' for v, label in ACTIONS)
    return ('<section id="apply" class="apply-panel" aria-labelledby="apply-title">'
            '<h2 id="apply-title">Apply the decisions</h2>'
            '<p>Each removed file is journaled first; <em>Undo the last apply</em> puts it back.'
            '</p><div class="apply-form">'
            f'<label>Action <select id="apply-action">{options}</select></label>'
            '<label id="apply-target-label" hidden>Folder <input id="apply-target" '
            'type="text" placeholder="/absolute/folder" autocomplete="off"></label>'
            '<button type="button" id="preview-apply">Show what would happen</button>'
            '<button type="button" id="run-apply" class="danger" hidden>Apply</button>'
            '<button type="button" id="undo-apply">Undo the last apply</button></div>'
            '<p id="apply-status" class="status" role="status" aria-live="polite"></p>'
            '<ol id="apply-steps" class="steps"></ol></section>')
