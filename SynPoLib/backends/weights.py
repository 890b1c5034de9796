"""Model weights in one place: what exists, where it lives, and whether it is intact.

Every model SynPo can load is a :class:`ModelFile` in :data:`REGISTRY` (hub repository,
file, size, SHA-256 where published, licence). Files are fetched once with
``huggingface_hub`` into a cache folder and used offline from then on:

- cache folder: the ``weights_dir`` argument, else ``$SYNPO_WEIGHTS_DIR``, else
  ``$XDG_CACHE_HOME/synpo/weights`` (``~/.cache/synpo/weights``); each model in its
  own sub-folder: ``<cache>/<model name>/<file name>``;
- a local file for one model: the ``path`` argument (CLI ``--sam2-checkpoint``,
  ``--dino-checkpoint``), else ``$SYNPO_WEIGHTS_<NAME>`` (see :attr:`ModelFile.env_var`);
- offline mode (``$SYNPO_OFFLINE=1`` or ``$HF_HUB_OFFLINE=1``, or ``offline=True``)
  never opens a connection: a missing file is an error that names the exact path to
  put it at and the command that fetches it.

Integrity: a download is checked against the registry's SHA-256 or, where none is
published, against the hub's own LFS SHA-256 of the file. The verified digest, size
and modification time are stamped next to the file, so later runs re-hash only a file
that changed since (a full re-hash of 5 GB of weights would cost every run seconds);
``synpo weights verify`` always re-hashes. A digest mismatch is refused.

A file with no published digest to compare with (placed by hand) is never called
verified: its structure is checked instead (:func:`structure_problem`: a safetensors
header that accounts for the file's size, a PyTorch zip archive whose directory is
whole), a broken one is refused, and its stamp records that its digest was only
first seen, not checked, so a later stamp match does not make it trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Union

from ..errors import WeightsError

#: environment variables
ENV_DIR = "SYNPO_WEIGHTS_DIR"
ENV_OFFLINE = "SYNPO_OFFLINE"
ENV_HF_OFFLINE = "HF_HUB_OFFLINE"

#: name of the stamp file written beside a verified file
STAMP_SUFFIX = ".synpo-verified.json"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsMissing(WeightsError):
    """The file is not on this machine and may not or could not be downloaded."""


class ChecksumMismatch(WeightsError):
    """The file on disk is not the published file (corrupt, truncated or replaced)."""


class BrokenCheckpoint(ChecksumMismatch):
    """A file with no published digest whose own structure shows it is incomplete or damaged."""


@dataclass(frozen=True)
class ModelFile:
    """One downloadable weights file."""

    name: str
    title: str
    filename: str
    licence: str
    #: Hugging Face hub repository; None: no hub copy, fetch from ``url`` by hand
    repo_id: Optional[str] = None
    revision: str = "main"
    #: exact size in bytes, where published
    size: Optional[int] = None
    #: SHA-256 of the file, where published (else the hub's LFS digest is used)
    sha256: Optional[str] = None
    #: approximate size for listings when the exact one is not known
    approx_bytes: Optional[int] = None
    #: where a person can fetch it (hub page or the authors' link)
    url: Optional[str] = None
    #: what the file is for: "sam2" or "dinov2"
    family: str = ""

    @property
    def env_var(self) -> str:
        """``SYNPO_WEIGHTS_<NAME>``: a local file to use instead of the cache."""
        return "SYNPO_WEIGHTS_" + re.sub(r"[^A-Z0-9]+", "_", self.name.upper()).strip("_")

    @property
    def download_url(self) -> Optional[str]:
        if self.repo_id is None:
            return self.url
        return f"https://huggingface.co/{self.repo_id}/resolve/{self.revision}/{self.filename}"

    @property
    def display_size(self) -> str:
        n = self.size or self.approx_bytes
        if not n:
            return "?"
        approx = "" if self.size else "~"
        return f"{approx}{n / 1e9:.2f} GB" if n >= 1e9 else f"{approx}{n / 1e6:.0f} MB"


def _sam2(size: str, nbytes: int, sha: str) -> ModelFile:
    dashed = size.replace("_", "-")
    return ModelFile(
        name=f"sam2.1-hiera-{dashed}", title=f"SAM 2.1 Hiera-{size} (Meta)", filename=f"sam2.1_hiera_{size}.pt",
        licence="Apache-2.0", repo_id=f"facebook/sam2.1-hiera-{dashed}", size=nbytes, sha256=sha, family="sam2")


def _dinov2(arch: str, timm_name: str, approx: int) -> ModelFile:
    return ModelFile(
        name=f"dinov2-{arch}", title=f"DINOv2 {arch} (Meta, timm conversion)", filename="model.safetensors",
        licence="Apache-2.0", repo_id=f"timm/{timm_name}.lvd142m", approx_bytes=approx, family="dinov2")


#: Sizes and digests of the SAM 2.1 files are those of Meta's 2024-09-28 release
#: (identical on dl.fbaipublicfiles.com and the hub), as recorded by several
#: independent projects. The timm DINOv2 files publish no digest: the hub's LFS
#: SHA-256 is checked at download instead.
REGISTRY: Dict[str, ModelFile] = {m.name: m for m in [
    _sam2("tiny", 156_008_466, "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69"),
    _sam2("small", 184_416_285, "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38"),
    _sam2("base_plus", 323_606_802, "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5"),
    _sam2("large", 898_083_611, "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318"),
    _dinov2("vits14", "vit_small_patch14_dinov2", 88_000_000),
    _dinov2("vits14-reg4", "vit_small_patch14_reg4_dinov2", 88_000_000),
    _dinov2("vitb14", "vit_base_patch14_dinov2", 346_000_000),
    _dinov2("vitb14-reg4", "vit_base_patch14_reg4_dinov2", 346_000_000),
    _dinov2("vitl14", "vit_large_patch14_dinov2", 1_217_000_000),
    _dinov2("vitl14-reg4", "vit_large_patch14_reg4_dinov2", 1_217_000_000),
    _dinov2("vitg14", "vit_giant_patch14_dinov2", 4_546_000_000),
    _dinov2("vitg14-reg4", "vit_giant_patch14_reg4_dinov2", 4_546_000_000),
    ModelFile(
        name="sinder-vitg14", title="SINDER-repaired DINOv2 ViT-g/14 (the paper's DINOv2; original format)",
        filename="sinder.pth", licence="see github.com/haoqiwang/sinder (DINOv2 weights: Apache-2.0)",
        url="https://github.com/haoqiwang/sinder#checkpoints (Google Drive link)", approx_bytes=4_546_000_000,
        family="dinov2"),
]}

#: the files the default ``synpo`` backend needs (SAM 2.1 large + DINOv2 ViT-L/14 reg4)
DEFAULT_SET = ("sam2.1-hiera-large", "dinov2-vitl14-reg4")


def get(name: str) -> ModelFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def weights_dir(override: Optional[os.PathLike] = None) -> Path:
    """The cache folder (argument > $SYNPO_WEIGHTS_DIR > XDG cache)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "synpo" / "weights"


def cached_path(model: ModelFile, directory: Optional[os.PathLike] = None) -> Path:
    """Where the file of ``model`` lives in the cache (whether or not it is there)."""
    return weights_dir(directory) / model.name / model.filename


def is_offline(offline: Optional[bool] = None) -> bool:
    """Offline when asked, or when $SYNPO_OFFLINE or $HF_HUB_OFFLINE is set true (read now)."""
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in (ENV_OFFLINE, ENV_HF_OFFLINE))


def sha256_file(path: Path, progress: Optional[Callable[[int], None]] = None) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
            if progress is not None:
                progress(len(block))
    return digest.hexdigest()


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + STAMP_SUFFIX)


def _read_stamp(path: Path) -> Optional[dict]:
    try:
        return json.loads(_stamp_path(path).read_text())
    except (OSError, ValueError):
        return None


def _write_stamp(path: Path, digest: str, trusted: bool) -> None:
    """Remember a hashed file; ``trusted``: its digest matched a published (or hub) one."""
    st = path.stat()
    try:
        _stamp_path(path).write_text(json.dumps({"sha256": digest, "size": st.st_size,
                                                 "mtime_ns": st.st_mtime_ns, "trusted": bool(trusted)}))
    except OSError:  # a read-only cache still works, it just re-hashes next time
        pass


def structure_problem(path: Path) -> Optional[str]:
    """Why a checkpoint file is incomplete or damaged, from its own structure (None: intact or unknown).

    safetensors: an 8-byte header length, a JSON header, and tensor data that ends
    exactly at the end of the file. PyTorch ``.pt``/``.pth`` zip archives: a central
    directory that opens, with every member inside the file. Other formats (a legacy
    pickle) cannot be checked without loading them.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        if path.suffix == ".safetensors":
            if len(head) < 8:
                return f"is {size} bytes: too short for a safetensors file"
            (n,) = struct.unpack("<Q", head)
            if 8 + n > size:
                return f"ends inside its safetensors header ({size:,} bytes, header of {n:,})"
            try:
                header = json.loads(handle.read(n))
                end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
            except (ValueError, KeyError, TypeError, IndexError):
                return "has a damaged safetensors header"
            if 8 + n + end != size:
                return f"is {size:,} bytes where its safetensors header accounts for {8 + n + end:,} (truncated)"
            return None
    if zipfile.is_zipfile(path) or head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as archive:
                for info in archive.infolist():
                    if info.header_offset + info.compress_size > size:
                        return f"has a zip member ({info.filename}) that runs past the end of the file"
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            return f"is not a whole PyTorch archive ({exc})"
    return None


def fetch_command(model: ModelFile) -> str:
    return f"synpo weights download {model.name}"


def _missing_message(model: ModelFile, target: Path, reason: str) -> str:
    lines = [f"{model.title}: weights file {model.filename} is missing: {reason}.",
             f"  expected at: {target}"]
    if model.repo_id is not None:
        lines.append(f"  fetch it (needs internet): {fetch_command(model)}")
        lines.append(f"  or download {model.download_url}")
        lines.append(f"     and save it as {target}")
    else:
        lines.append(f"  it is not on the Hugging Face hub: download it from {model.url}")
        lines.append(f"     and save it as {target}")
    option = {"sam2": "--sam2-checkpoint", "dinov2": "--dino-checkpoint"}.get(model.family)
    lines.append(f"  or use a copy you have: set {model.env_var}=/path/to/{model.filename}"
                 + (f" or pass {option} /path/to/{model.filename}" if option else ""))
    return "\n".join(lines)


def verify_file(model: ModelFile, path: Path, *, full: bool = False, expected: Optional[str] = None,
                hash_progress: Optional[Callable[[int], None]] = None) -> str:
    """Check ``path`` is the expected file of ``model``; return its SHA-256.

    The expected digest is ``expected`` (the hub's, at download time), else the
    registry's, else the one stamped when the file was first verified (so a file
    that changes afterwards is caught even without a published digest). A file with
    no digest to compare with (placed by hand, none published) is accepted and
    stamped. Without ``full``, a file whose size and mtime match its stamp is not
    re-hashed. Raises :class:`ChecksumMismatch`, naming the file, on a wrong size or
    digest.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsMissing(f"{path} does not exist")
    st = path.stat()
    if model.size is not None and st.st_size != model.size:
        kind = "truncated" if st.st_size < model.size else "larger than the published file"
        raise ChecksumMismatch(
            f"{path} is {kind}: {st.st_size} bytes, expected {model.size} for {model.name}. Delete it and run: "
            f"{fetch_command(model)}")
    stamp = _read_stamp(path) or {}
    published = expected or model.sha256
    trusted_stamp = bool(stamp.get("trusted")) and stamp.get("sha256") is not None
    want = published or stamp.get("sha256")
    if (not full and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns
            and want is not None and stamp.get("sha256") == want):
        return str(want)
    if not published and not trusted_stamp:
        problem = structure_problem(path)
        if problem:
            raise BrokenCheckpoint(f"{path} {problem}: the file is incomplete or damaged. Delete it and run: "
                                   f"{fetch_command(model)}")
    digest = sha256_file(path, hash_progress)
    if want is not None and digest != want:
        raise ChecksumMismatch(
            f"{path} has SHA-256 {digest}, expected {want} for {model.name}: the file is corrupt, truncated or "
            f"not the published one. Delete it and run: {fetch_command(model)}")
    _write_stamp(path, digest, trusted=bool(published) or trusted_stamp)
    return digest


def is_trusted(model: ModelFile, path: Path) -> bool:
    """Whether ``path``'s digest was checked against a published one (else only its structure was)."""
    stamp = _read_stamp(Path(path)) or {}
    return model.sha256 is not None or bool(stamp.get("trusted"))


#: ``progress``: True (a bar on stderr), False (silent), or ``callback(done_bytes, total_bytes)``
Progress = Union[bool, Callable[[int, Optional[int]], None]]


def _bar_class(progress: Progress):
    """A tqdm class for huggingface_hub: always drawn (hub bars hide off a terminal,
    where a user waiting for 900 MB still wants to see it move), or feeding a callback
    (the Slicer module's progress dialog)."""
    import io

    from tqdm import tqdm

    callback = progress if callable(progress) else None

    class DownloadBar(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["file"] = io.StringIO() if callback else sys.stderr
            kwargs["disable"] = False
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            if callback is not None:
                callback(int(self.n), None if self.total is None else int(self.total))
            return shown

    return DownloadBar


def _hub_download(model: ModelFile, directory: Path, endpoint: Optional[str], progress: Progress) -> Path:
    """Fetch the file with huggingface_hub into ``directory / model.name``; returns its path."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # $HF_ENDPOINT (a hub mirror) is read now, not when huggingface_hub was imported
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    target_dir = directory / model.name
    target_dir.mkdir(parents=True, exist_ok=True)
    url = hf_hub_url(model.repo_id, model.filename, revision=model.revision, endpoint=endpoint)
    meta = get_hf_file_metadata(url, endpoint=endpoint)
    hub_sha = meta.etag if meta.etag and _SHA256.match(meta.etag) else None
    if model.sha256 and hub_sha and hub_sha != model.sha256:
        raise ChecksumMismatch(
            f"the hub's {model.repo_id}/{model.filename} has SHA-256 {hub_sha}, but SynPo expects "
            f"{model.sha256}: the published file changed; nothing was downloaded")
    silence = progress is False and not are_progress_bars_disabled()
    if silence:
        disable_progress_bars()
    try:
        local = Path(hf_hub_download(model.repo_id, model.filename, revision=model.revision,
                                     local_dir=target_dir, endpoint=endpoint,
                                     tqdm_class=None if progress is False else _bar_class(progress)))
    finally:
        if silence:
            enable_progress_bars()
    try:
        verify_file(model, local, full=True, expected=model.sha256 or hub_sha)
    except ChecksumMismatch:
        local.unlink(missing_ok=True)  # never leave a bad file where the next run would find it
        raise
    return local


def download(name: str, *, weights_dir_override: Optional[os.PathLike] = None, offline: Optional[bool] = None,
             force: bool = False, endpoint: Optional[str] = None, progress: Progress = True,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Path:
    """Fetch ``name`` into the cache (or verify the copy already there); returns its path."""
    model = get(name)
    target = cached_path(model, weights_dir_override)
    if target.is_file() and not force:
        verify_file(model, target)
        return target
    if model.repo_id is None:
        raise WeightsMissing(_missing_message(model, target, "it cannot be downloaded automatically"))
    if is_offline(offline):
        raise WeightsMissing(_missing_message(model, target, "offline mode is on ($SYNPO_OFFLINE / "
                                                             "$HF_HUB_OFFLINE), so nothing is downloaded"))
    if force and target.is_file():
        target.unlink()
        _stamp_path(target).unlink(missing_ok=True)
    log(f"downloading {model.title}: {model.repo_id}/{model.filename} ({model.display_size}) to {target}")
    try:
        path = _hub_download(model, target.parent.parent, endpoint, progress)
    except WeightsError:
        raise
    except Exception as exc:  # network, HTTP, disk: all end in the same instructions
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        reason = f"the download failed ({type(exc).__name__}: {first_line})"
        raise WeightsMissing(_missing_message(model, target, reason)) from exc
    if path != target:  # pragma: no cover - huggingface_hub keeps the file name in local_dir
        raise WeightsError(f"huggingface_hub stored {model.filename} at {path}, expected {target}")
    return target


def resolve(name: str, *, path: Optional[os.PathLike] = None, weights_dir_override: Optional[os.PathLike] = None,
            offline: Optional[bool] = None, allow_download: bool = True, endpoint: Optional[str] = None,
            progress: Progress = True, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Path:
    """The local file to load for model ``name``.

    Order: ``path`` argument, ``$SYNPO_WEIGHTS_<NAME>``, the cache (verified), a
    download (unless offline or ``allow_download`` is False). A user-supplied file
    is loaded as given (it may be a fine-tuned model): only cache files are checked
    against published digests.
    """
    model = get(name)
    override = path or os.environ.get(model.env_var)
    if override:
        local = Path(override).expanduser()
        if not local.is_file():
            source = "given" if path else f"set in ${model.env_var}"
            raise WeightsMissing(f"{model.title}: the checkpoint file {source} does not exist: {local}")
        return local
    target = cached_path(model, weights_dir_override)
    if target.is_file():
        verify_file(model, target)
        return target
    if not allow_download:
        raise WeightsMissing(_missing_message(model, target, "it is not in the cache"))
    return download(name, weights_dir_override=weights_dir_override, offline=offline, endpoint=endpoint,
                    progress=progress, log=log)


@dataclass
class Status:
    model: ModelFile
    path: Path
    present: bool
    state: str  # "missing", "ok", "unverified", "mismatch", "broken"
    detail: str = ""


def status(names: Optional[Iterable[str]] = None, *, weights_dir_override: Optional[os.PathLike] = None,
           full: bool = False) -> List[Status]:
    """State of each model's cached file; ``full`` re-hashes every present file."""
    out = []
    for name in (names or sorted(REGISTRY)):
        model = get(name)
        target = cached_path(model, weights_dir_override)
        if not target.is_file():
            out.append(Status(model, target, False, "missing"))
            continue
        if not full:
            stamp = _read_stamp(target)
            st = target.stat()
            fresh = bool(stamp and stamp.get("size") == st.st_size and stamp.get("mtime_ns") == st.st_mtime_ns
                         and (model.sha256 is None or stamp.get("sha256") == model.sha256)
                         and (model.sha256 is not None or stamp.get("trusted")))
            out.append(Status(model, target, True, "ok" if fresh else "unverified"))
            continue
        try:
            digest = verify_file(model, target, full=True)
        except BrokenCheckpoint as exc:
            out.append(Status(model, target, True, "broken", str(exc)))
        except ChecksumMismatch as exc:
            out.append(Status(model, target, True, "mismatch", str(exc)))
        else:
            trusted = is_trusted(model, target)
            out.append(Status(model, target, True, "ok" if trusted else "unverified",
                              digest if trusted else f"{digest} (no published digest to compare with; "
                                                         "its structure is intact)"))
    return out


__all__ = ["BrokenCheckpoint", "ChecksumMismatch", "DEFAULT_SET", "ModelFile", "REGISTRY", "Status", "WeightsError",
           "WeightsMissing", "cached_path", "download", "fetch_command", "get", "is_offline", "is_trusted", "resolve",
           "sha256_file", "status", "structure_problem", "verify_file", "weights_dir"]
