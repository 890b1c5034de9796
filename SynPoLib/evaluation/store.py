"""A resumable result store: one JSON line per finished (case, method configuration).

A run appends each finished episode as it completes (mask file first, then the line,
flushed to disk), so an interrupted run loses at most the episode in flight, and a
re-run skips every (case key, fingerprint) already stored. The fingerprint covers the
backend and the whole configuration, so a changed parameter is computed afresh rather
than confused with an old result. A torn last line (killed mid-write) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from ..io import atomic_path


class ResultStore:
    """``results.jsonl`` plus ``masks/<id>.npz`` (the scored slices' predicted masks) in a folder."""

    def __init__(self, folder: os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "results.jsonl"
        self.mask_dir = self.folder / "masks"
        self._entries: Dict[Tuple[str, str], dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn line from an interrupted write
                self._entries[(entry["case_key"], entry["fingerprint"])] = entry

    def __len__(self) -> int:
        return len(self._entries)

    def has(self, case_key: str, fingerprint: str) -> bool:
        return (case_key, fingerprint) in self._entries

    def get(self, case_key: str, fingerprint: str) -> Optional[dict]:
        return self._entries.get((case_key, fingerprint))

    def entries(self) -> Iterator[dict]:
        return iter(self._entries.values())

    @staticmethod
    def _mask_name(case_key: str, fingerprint: str) -> str:
        return hashlib.sha1(f"{case_key}#{fingerprint}".encode()).hexdigest()[:24] + ".npz"

    def add(self, entry: dict, masks: np.ndarray) -> None:
        """Store one finished episode: ``masks`` is (n scored slices, rows, cols) bool."""
        key = (entry["case_key"], entry["fingerprint"])
        masks = np.asarray(masks, dtype=bool)
        self.mask_dir.mkdir(parents=True, exist_ok=True)
        name = self._mask_name(*key)
        with atomic_path(self.mask_dir / name) as tmp:
            with open(tmp, "wb") as handle:
                np.savez_compressed(handle, bits=np.packbits(masks.reshape(-1)), shape=np.array(masks.shape))
        line = json.dumps(entry, sort_keys=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._entries[key] = entry

    def masks(self, case_key: str, fingerprint: str) -> np.ndarray:
        """The stored (n scored slices, rows, cols) bool masks of an episode."""
        with np.load(self.mask_dir / self._mask_name(case_key, fingerprint)) as data:
            shape = tuple(int(n) for n in data["shape"])
            return np.unpackbits(data["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)


__all__ = ["ResultStore"]
