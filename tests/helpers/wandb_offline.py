"""Read an offline W&B run back from disk: the records of its ``run-<id>.wandb`` file and its ``files/`` folder.

wandb 0.31 ships the protobuf schema of the records (``wandb.proto.wandb_internal_pb2.Record``) but no Python reader of
the file they are framed in, W&B's transaction log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of LevelDB-log chunks (CRC-32 4 bytes, length 2 bytes little-endian, type 1 byte: FULL 1, FIRST 2,
MIDDLE 3, LAST 4); a block tail shorter than a chunk header is zero padding. That framing is all this module adds.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_BLOCK, _HEADER = 32768, 7


def offline_run_dir(save_dir: Path) -> Path:
    runs = sorted((Path(save_dir) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    return runs[0]


def records(run_dir: Path, timeout: float = 60.0) -> list[Any]:
    """Every record of a finished run. ``wandb.finish()`` can return before W&B's service has written the last records,
    so this waits (up to ``timeout`` seconds) for the file and for the run's closing ``exit`` record."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(Path(run_dir).glob("run-*.wandb"))
        assert len(found) <= 1, found
        recs = _parse(found[0].read_bytes(), found[0]) if found else []
        if any(r.WhichOneof("record_type") == "exit" for r in recs) or time.monotonic() > deadline:
            return recs
        time.sleep(0.2)


def _parse(data: bytes, path: Path) -> list[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    if len(data) < _HEADER:
        return []
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    out, buf, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        buf += data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b""
    return out


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def history(recs) -> list[dict[str, Any]]:
    """One dict per logged step: top-level key -> JSON value (media values are dicts with ``_type`` and ``path``)."""
    rows = []
    for r in recs:
        if r.WhichOneof("record_type") == "history":
            row: dict[str, Any] = {}
            for item in r.history.item:
                keys = list(item.nested_key) or [item.key]
                if len(keys) == 1:
                    row[keys[0]] = json.loads(item.value_json)
                else:  # a media value arrives as one item per field
                    row.setdefault("/".join(keys[:-1]), {})[keys[-1]] = json.loads(item.value_json)
            rows.append(row)
    return rows


def summary(recs) -> dict[str, Any]:
    """The run summary as the records leave it (later updates win)."""
    out: dict[str, Any] = {}
    for r in recs:
        if r.WhichOneof("record_type") == "summary":
            for item in r.summary.update:
                out[_key(item)] = json.loads(item.value_json)
    return out


def metric_definitions(recs) -> dict[str, Any]:
    """name -> the MetricRecord of each ``define_metric`` (glob names included)."""
    return {r.metric.name or r.metric.glob_name: r.metric for r in recs if r.WhichOneof("record_type") == "metric"}
