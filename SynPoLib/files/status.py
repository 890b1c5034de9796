"""A batch case's status record, and what makes a case count as finished.

Each case folder holds ``status.json``, written atomically and last, after every
output of the case: it names the inputs with their SHA-256 digests, the configuration
fingerprint, the outputs with their digests, timings, QC flags and the error if the
case failed. A case is finished only when its record says ``done``, its inputs and
configuration are what the run would use now, and every output it lists is on disk
with the digest it was written with, so a file replaced, truncated or half-written
after the fact sends the case back to work. Temporary files (``.<name>.*``, from
:func:`SynPoLib.io.atomic_path`) left by a process that was killed are removed before
the case runs again and never count as outputs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Dict, Mapping, Optional, Tuple

from ..io import atomic_path

#: bumped when the record's meaning changes: older records are then re-run
STATUS_VERSION = 1
STATUS_NAME = "status.json"

#: SegmentRequest fields that do not change what a case computes: paths (inputs are
#: compared by digest, outputs are the batch's own), and how or where it runs
NOT_IN_FINGERPRINT = frozenset({
    "query", "support", "support_mask", "reference", "out", "labelmap", "png", "records", "confidence_png",
    "device", "weights_dir", "offline", "batch_size", "quiet",
})
#: SegmentRequest fields naming files whose content decides the result
CONTENT_FIELDS = ("config", "sam2_checkpoint", "dino_checkpoint")

_digests: Dict[Tuple[str, int, int], str] = {}
_digest_lock = threading.Lock()


def file_digest(path: os.PathLike) -> str:
    """SHA-256 of a file's bytes (memoised per process by path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _digest_lock:
        if key in _digests:
            return _digests[key]
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    digest = sha.hexdigest()
    with _digest_lock:
        _digests[key] = digest
    return digest


def input_digests(inputs: Mapping[str, str]) -> Dict[str, dict]:
    """role -> {path, sha256} for a case's input files (``None`` digest: unreadable now)."""
    out = {}
    for role, path in inputs.items():
        try:
            digest = file_digest(path)
        except OSError:
            digest = None
        out[role] = {"path": str(path), "sha256": digest}
    return out


def config_fingerprint(request, config=None) -> str:
    """Identity of what a :class:`~SynPoLib.files.SegmentRequest` computes, paths aside.

    Covers every option that changes the result (backend and model options, window,
    mode, ``--set`` edits, axis, label, slices...), the effective configuration
    ``config`` (a :class:`~SynPoLib.config.SynPoConfig`, as the checks resolved it;
    without it, every preset's values), the contents of a ``--config`` file and of
    local checkpoints, and SynPoLib's version: a change to any of them runs the case
    again.
    """
    from .. import __version__
    from ..presets import PRESETS

    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    payload = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(fields.items())
               if k not in NOT_IN_FINGERPRINT}
    for key in CONTENT_FIELDS:
        if fields.get(key):
            try:
                payload[key] = file_digest(fields[key])
            except OSError:
                payload[key] = f"unreadable: {fields[key]}"
    if config is not None:
        payload["effective_config"] = config.to_dict()
    else:
        payload["presets"] = {name: cfg.to_dict() for name, cfg in sorted(PRESETS.items())}
    payload["version"] = __version__
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def read_status(case_dir: os.PathLike) -> Optional[dict]:
    """The case's record, or None when there is none (or it cannot be read as one)."""
    path = Path(case_dir) / STATUS_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def write_status(case_dir: os.PathLike, record: dict) -> None:
    """Write the record atomically (the last file a case writes)."""
    with atomic_path(Path(case_dir) / STATUS_NAME) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True, default=str))


def output_digests(case_dir: os.PathLike, names) -> Dict[str, str]:
    """file name -> SHA-256 for the outputs a case wrote into its folder."""
    return {name: file_digest(Path(case_dir) / name) for name in names}


def finished(record: Optional[dict], inputs: Mapping[str, dict], fingerprint: str,
             case_dir: os.PathLike) -> Tuple[bool, str]:
    """(True, "") when ``record`` is a finished case for these inputs and configuration,
    else (False, why it runs)."""
    if record is None:
        return False, "not run yet"
    if record.get("version") != STATUS_VERSION:
        return False, "record from another SynPo version"
    if record.get("state") != "done":
        return False, f"{record.get('state', 'unknown')} before"
    if record.get("fingerprint") != fingerprint:
        return False, "configuration changed"
    before = {role: entry.get("sha256") for role, entry in (record.get("inputs") or {}).items()}
    now = {role: entry.get("sha256") for role, entry in inputs.items()}
    if before != now or None in now.values():
        changed = sorted(r for r in set(before) | set(now) if before.get(r) != now.get(r)) or sorted(now)
        return False, f"input changed: {', '.join(changed)}"
    outputs = record.get("outputs") or {}
    if not outputs:
        return False, "no outputs recorded"
    for name, digest in outputs.items():
        path = Path(case_dir) / name
        try:
            if file_digest(path) != digest:
                return False, f"output {name} changed since it was written"
        except OSError:
            return False, f"output {name} is missing"
    return True, ""


def remove_partial_files(case_dir: os.PathLike) -> int:
    """Delete the temporary files a killed process left in a case folder; returns how many."""
    folder = Path(case_dir)
    if not folder.is_dir():
        return 0
    count = 0
    for path in folder.iterdir():
        if path.name.startswith(".") and path.is_file():
            path.unlink(missing_ok=True)
            count += 1
    return count


__all__ = ["STATUS_NAME", "STATUS_VERSION", "config_fingerprint", "file_digest", "finished", "input_digests",
           "output_digests", "read_status", "remove_partial_files", "write_status"]
