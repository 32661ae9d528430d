"""`info`: what an index holds, as typed data (the renderers in output/ format it)."""

from __future__ import annotations

import os
from typing import Any

from deepvision.store.faiss_index import faiss_build
from deepvision.store.indexstore import IndexStore


def describe(store: IndexStore, with_failures: bool = False) -> dict[str, Any]:
    """What `deepvision info` shows; the keys are the stable JSON of `info --json`."""
    with store.open_read() as snap:
        manifest, catalog, plan = snap.manifest, snap.catalog, snap.plan
        counts = catalog.counts()
        metadata = catalog.metadata_counts()
        failures = catalog.failed_files() if with_failures else []
        roots = catalog.roots()
    size = sum(p.stat().st_size for p in store.dir.iterdir() if p.is_file())
    data: dict[str, Any] = {
        "index": os.path.abspath(store.dir),
        "files": counts["files"],
        "vectors": counts["vectors"],
        "video_frames": counts["frames"],
        "failed": counts["failed"],
        # How many indexed files have each kind of metadata (#28); "read": any at all (files
        # indexed before metadata get theirs from the next `index`).
        "metadata": metadata,
        "model": manifest.model,
        "weights": f"{manifest.weights} ({manifest.weights_origin})",
        "dim": manifest.dim,
        "descriptor": manifest.descriptor.to_dict(),
        "text_encoder": manifest.text_encoder,
        "descriptor_note": manifest.descriptor_note(),
        "index_type": plan.kind,
        "index_requested": manifest.index_type,
        "index_factory": plan.factory,
        "index_params": {k: v for k, v in plan.to_dict().items()
                         if k not in ("kind", "factory") and v},
        "faiss": faiss_build(),
        "metric": manifest.metric,
        "size_bytes": size,
        "folders": roots,
        "created": manifest.created,
        "updated": manifest.updated,
        "schema_version": manifest.schema_version,
        "preprocess_version": manifest.preprocess_version,
    }
    if with_failures:
        data["failures"] = [{"path": f.path, "reason": f.reason, "message": f.message}
                            for f in failures]
    return data
