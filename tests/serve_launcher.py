"""`python tests/serve_launcher.py serve --index-dir DIR --port 0`: the real `deepvision serve`
(the same `server.run.serve`, a real process and socket) with a Searcher that plants
verification results (#25) on what it ranks, so the page's display of matches, verified marks,
boxes and points is tested before, and independently of, the verifier itself.

Planted: rank 1 and 2 are verified matches with a box on each side and matched points; rank 3
was checked and failed (verified false); the rest were not checked. Injected through
ServeRequest.searcher, not by patching a module.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent

QUERY_BOX = (0.1, 0.2, 0.6, 0.7)
MATCH_BOX = (0.25, 0.25, 0.75, 0.75)
POINTS = ((0.2, 0.3, 0.3, 0.35), (0.5, 0.6, 0.6, 0.65), (0.3, 0.5, 0.4, 0.55))


def planted_searcher() -> type:
    from deepvision.services.search import Searcher
    from deepvision.types import Box, Match, Verification

    evidence = Verification(inliers=42, score=0.9, query_box=Box(*QUERY_BOX),
                            match_box=Box(*MATCH_BOX), transform=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                            points=POINTS)

    def plant(m: Match) -> Match:
        if m.rank <= 2:
            return replace(m, verified=True, verification=evidence, match=True)
        if m.rank == 3:
            return replace(m, verified=False, match=False)
        return replace(m, verified=None, match=False)

    class PlantedSearcher(Searcher):
        def rank_queries(self, queries, opts):  # type: ignore[no-untyped-def]
            ranked, notes = super().rank_queries(queries, opts)
            return [[plant(m) for m in found] for found in ranked], notes

    return PlantedSearcher


def main(argv: list[str]) -> None:
    sys.path.insert(0, str(HERE.parent))
    from deepvision.output.console import ConsoleReporter
    from deepvision.pipeline.embedder import EmbedOptions
    from deepvision.server.app import ServeConfig
    from deepvision.server.run import ServeRequest, serve
    from deepvision.store.indexstore import IndexStore

    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--index-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    request = ServeRequest(store=IndexStore(args.index_dir, "default"),
                           config=ServeConfig(port=args.port), embed=EmbedOptions(workers=0),
                           searcher=planted_searcher(), verify=False)
    serve(request, ConsoleReporter())


if __name__ == "__main__":
    main(sys.argv[1:])
