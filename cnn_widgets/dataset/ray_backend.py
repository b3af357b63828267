"""``scan(..., backend="ray")``: the same scan as Ray Data ``map_batches`` tasks over index ranges of the
data, merged on the driver.

Shard boundaries fall on multiples of ``batch_size`` counted from where the scan starts, so every
shard runs exactly the forward passes the local scan would, and merging the shard results in order
gives the local result (``==``, see :meth:`ScanResult.__eq__`). The model and the data go to the workers
once, through Ray's object store (Ray serialises them with cloudpickle, as any Ray task argument); each
shard comes back as the ``.npz`` bytes :meth:`ScanResult.save` writes and is read with
``allow_pickle=False``. ``ray.init()`` is called when Ray is not initialised yet, so the
``RAY_ADDRESS`` environment variable (or an earlier ``ray.init(address=...)``) picks the cluster.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from torch import nn

from .progress import Progress
from .result import ScanResult
from .source import Source


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401  (the Data library is an extra of the ray package)
    except ImportError as err:
        raise ImportError(
            'backend="ray" needs Ray Data: pip install "ray[data]>=2.9" (or the extra: cnn_widgets[ray])'
        ) from err
    return ray


def shard_bounds(start: int, total: int, batch_size: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` (at most one per batch) consecutive ranges covering images ``start``‥``total-1``, each
    starting at ``start`` plus a multiple of ``batch_size``."""
    n_batches = math.ceil((total - start) / batch_size)
    shards = max(1, min(shards, n_batches))
    cuts = [start + (n_batches * i // shards) * batch_size for i in range(shards)] + [total]
    return [(cuts[i], min(cuts[i + 1], total)) for i in range(shards)]


def scan_shards(rows: dict[str, np.ndarray], job: Any) -> dict[str, np.ndarray]:
    """Ray Data UDF: scan each (start, stop) row's images and return the results as npz bytes. ``job``:
    ``{"model", "data", "settings"}`` or a Ray object reference to it."""
    from .scan import local_scan

    spec = job if isinstance(job, dict) else _import_ray().get(job)
    source = Source(spec["data"])
    blobs = []
    for start, stop in zip(rows["start"].tolist(), rows["stop"].tolist()):
        part = local_scan(spec["model"], Source(source.view(start, stop)), spec["settings"], resume=None,
                          progress=False, checkpoint=None)
        blobs.append(part.to_bytes())
    return {"start": rows["start"], "result": np.array(blobs, dtype=object)}


def merged_prefix(
    resume: ScanResult | None, parts: dict[int, ScanResult], bounds: list[tuple[int, int]]
) -> ScanResult | None:
    """``resume`` merged with the finished shards that follow it without a gap, in order."""
    result = resume
    for start, _ in bounds:
        if start not in parts:
            break
        result = parts[start] if result is None else result.merge(parts[start])
    return result


def ray_scan(
    model: nn.Module, source: Source, settings: dict[str, Any], *, resume: ScanResult | None,
    shards: int | None, progress: bool, checkpoint: str | os.PathLike | None,
) -> ScanResult:
    """The scan of :func:`cnn_widgets.scan` on Ray (see the module doc); ``checkpoint`` receives the
    finished leading shards when the scan ends or fails."""
    ray = _import_ray()
    from .scan import positive_int

    source.view(0, 0)  # refuses data that cannot be indexed before starting anything
    total = source.total
    assert total is not None  # indexable data has a length
    start = resume.count if resume is not None else 0
    if total <= start:
        raise ValueError("the data holds no images" + (f" after the {start} already scanned" if start else ""))
    if not ray.is_initialized():
        ray.init()
    if shards is None:
        shards = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    bounds = shard_bounds(start, total, settings["batch_size"], positive_int("shards", shards))
    job = ray.put({"model": model, "data": source.data, "settings": settings})
    rows = ray.data.from_items([{"start": a, "stop": b} for a, b in bounds], override_num_blocks=len(bounds))
    out = rows.map_batches(scan_shards, fn_kwargs={"job": job}, batch_size=1, batch_format="numpy")
    parts: dict[int, ScanResult] = {}
    bar = Progress(progress, total - start, title="scan (ray)")
    ok = False
    try:
        for row in out.iter_rows():
            part = ScanResult.from_bytes(bytes(row["result"]))
            parts[int(row["start"])] = part
            bar.update(sum(p.count for p in parts.values()))
        ok = True
    finally:
        bar.close(ok)
        if checkpoint is not None and parts:
            done = merged_prefix(resume, parts, bounds)
            if done is not None:
                done.save(checkpoint)
    result = merged_prefix(resume, parts, bounds)
    if result is None or result.count != total:
        raise ValueError(
            f"the data has {total} items but {0 if result is None else result.count} images were scanned; "
            "backend='ray' shards by item index, so every item must hold exactly one image"
        )
    return result
