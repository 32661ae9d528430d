#!/usr/bin/env bash
# A/B throughput: bench/throughput.py at a base commit and at the working tree, alternated
# (base, head, base, head) on one machine in one run, so the ratio is measured side by side.
#
#   bash bench/ab_throughput.sh [BASE] [throughput.py options...]
#   e.g. bash bench/ab_throughput.sh a7de753 --n 128 --sizes 640x480 1920x1080
#
# Each side runs its own tree's bench/throughput.py with PYTHONPATH on its own package, in the
# current virtual environment. The tables go to $OUT (default: a temp folder), one per run.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-a7de753}; shift || true
out=${OUT:-$(mktemp -d)}
wt=$(mktemp -d)/base
git worktree add -q --detach "$wt" "$base"
trap 'git worktree remove --force "$wt"' EXIT
for round in 1 2; do
    for side in base head; do
        dir=$([ "$side" = base ] && echo "$wt" || pwd)
        echo "== round $round: $side ($(git -C "$dir" rev-parse --short HEAD))" >&2
        (cd "$dir" && PYTHONPATH="$dir" python bench/throughput.py "$@") \
            > "$out/$side-$round.md" 2> "$out/$side-$round.log"
        grep -E '^\| [0-9]+x[0-9]+ ' "$out/$side-$round.md" | sed "s/^/$side $round /" >&2
    done
done
echo "tables in $out" >&2
