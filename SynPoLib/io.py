"""Files in and out: volumes through SimpleITK, segmentations as Slicer's ``.seg.nrrd``.

Geometry is kept exactly: arrays are (k, j, i) as SimpleITK gives them, and the written
segmentation carries the query image's IJK-to-LPS matrix (origin, spacing, direction),
so 3D Slicer places every voxel where it belongs in any orientation.

Reading: :func:`inspect_image` checks a file from its header alone (the kind of file,
a 3-D grey image, voxel data all there) and :func:`read_volume` reads only what passed
it. SimpleITK fills the missing part of a truncated NIfTI (``.nii``, ``.nii.gz``,
``.hdr/.img``) with zeros and reads on, so completeness is checked here, from the
header's data size against the file size (and against a gzip stream's length field).

Writing: the outputs of a run go to temporary files beside them, renamed into place
together once everything has succeeded (:func:`staged_outputs`); an error, Ctrl-C or
SIGTERM before that removes the temporary files, and the renames are not interrupted.
"""

from __future__ import annotations

import gzip
import os
import signal
import struct
import tempfile
import threading
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .config import DEFAULT_COLOR
from .errors import InputError, Terminated
from .paths import check_input_file


@dataclass(frozen=True)
class Volume:
    """A 3-D image as a (k, j, i) array plus its physical geometry (LPS, as SimpleITK)."""

    array: np.ndarray
    #: spacing in array order (k, j, i)
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    #: 3x3 direction matrix, row-major as SimpleITK's GetDirection
    direction: Tuple[float, ...]
    path: Optional[str] = None

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel (i, j, k) to LPS millimetres."""
        spacing_ijk = np.asarray(self.spacing[::-1], dtype=float)
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction, dtype=float).reshape(3, 3) * spacing_ijk[None, :]
        matrix[:3, 3] = self.origin
        return matrix

    def to_image(self, array: Optional[np.ndarray] = None) -> sitk.Image:
        """A SimpleITK image with this geometry (and this or another array of the same shape)."""
        data = self.array if array is None else array
        if data.shape != self.array.shape:
            raise ValueError(f"array shape {data.shape} differs from the volume's {self.array.shape}")
        image = sitk.GetImageFromArray(data)
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction))
        return image

    @classmethod
    def from_image(cls, image: sitk.Image, path: Optional[str] = None) -> "Volume":
        if image.GetDimension() != 3:
            raise InputError(f"{path or 'image'}: expected a 3-D volume, got {image.GetDimension()}-D")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{path or 'image'}: expected one value per voxel (a grey volume), "
                             f"got {image.GetNumberOfComponentsPerPixel()}")
        return cls(array=sitk.GetArrayFromImage(image), spacing=tuple(image.GetSpacing()[::-1]),
                   origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()), path=path)


# --------------------------------------------------------------------------- reading

def _component_bytes() -> dict:
    """Bytes per component of SimpleITK's scalar pixel types (complex and label types excluded)."""
    out = {}
    for names, n in ((("UInt8", "Int8"), 1), (("UInt16", "Int16"), 2), (("UInt32", "Int32", "Float32"), 4),
                     (("UInt64", "Int64", "Float64"), 8)):
        for name in names:
            for prefix in ("sitk", "sitkVector"):
                pixel_id = getattr(sitk, prefix + name, None)
                if pixel_id is not None and pixel_id >= 0:
                    out[pixel_id] = n
    return out


_COMPONENT_BYTES = _component_bytes()


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says, with the conventions of :class:`Volume`."""

    path: str
    #: (k, j, i): the array's shape
    shape: Tuple[int, ...]
    #: spacing in array order (k, j, i)
    spacing: Tuple[float, ...]
    origin: Tuple[float, ...]
    direction: Tuple[float, ...]
    pixel_type: str
    components: int
    component_bytes: int = field(default=0, repr=False)

    @property
    def data_bytes(self) -> int:
        """Bytes of voxel data the file must hold, uncompressed."""
        return int(np.prod(self.shape)) * self.components * self.component_bytes


def _reason(exc: Exception) -> str:
    """ITK's useful sentence from an exception text (the last line that is not a location)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Exception thrown", "sitk::ERROR: Exception"))]
    return (useful or lines or ["unknown error"])[-1].replace("sitk::ERROR: ", "")[:200]


def inspect_image(path: os.PathLike, flag: str = "") -> ImageInfo:
    """Check an image file from its header, without reading its voxels.

    A regular readable file (:func:`SynPoLib.paths.check_input_file`), an image
    SimpleITK can read, 3-D, one value per voxel, positive spacing, and voxel data
    that is all there (:func:`data_problem`). Raises :class:`InputError` that starts
    with ``flag`` (e.g. ``--query``) and the path.
    """
    path = check_input_file(path, flag or "image")
    where = f"{flag} {path}" if flag else str(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{where}: cannot read it as an image (NIfTI, NRRD, MHA): {_reason(exc)}") from None
    if reader.GetDimension() != 3:
        raise InputError(f"{where}: expected a 3-D volume, got a {reader.GetDimension()}-D image")
    components = int(reader.GetNumberOfComponents())
    if components != 1:
        raise InputError(f"{where}: expected one value per voxel (a grey volume or a labelmap), got {components} "
                         "(a colour or vector image)")
    pixel = reader.GetPixelID()
    if pixel not in _COMPONENT_BYTES:
        raise InputError(f"{where}: voxels of type {sitk.GetPixelIDValueAsString(pixel)} are not supported; "
                         "save it with integer or floating-point voxels")
    size = tuple(int(n) for n in reader.GetSize())
    info = ImageInfo(path=str(path), shape=size[::-1], spacing=tuple(reader.GetSpacing()[::-1]),
                     origin=tuple(reader.GetOrigin()), direction=tuple(reader.GetDirection()),
                     pixel_type=sitk.GetPixelIDValueAsString(pixel), components=components,
                     component_bytes=_COMPONENT_BYTES[pixel])
    if min(size) < 1:
        raise InputError(f"{where}: the volume has no voxels (size {size})")
    if not all(np.isfinite(info.spacing)) or min(info.spacing) <= 0:
        raise InputError(f"{where}: the header's voxel spacing {info.spacing[::-1]} is not positive")
    problem = data_problem(path, info)
    if problem:
        raise InputError(f"{where} {problem}")
    return info


def read_volume(path: os.PathLike, flag: str = "") -> Volume:
    """Read NIfTI, NRRD, MHA (anything SimpleITK reads), checked first by :func:`inspect_image`."""
    info = inspect_image(path, flag)
    try:
        image = sitk.ReadImage(info.path)
    except RuntimeError as exc:
        where = f"{flag} {path}" if flag else str(path)
        raise InputError(f"{where}: cannot read it as an image (NIfTI, NRRD, MHA): {_reason(exc)}") from None
    return Volume.from_image(image, info.path)


# --- is the voxel data all there?

def _gzip_length(path: Path, offset: int = 0, expected: Optional[int] = None) -> Tuple[int, bool]:
    """(uncompressed bytes, whether every gzip member ended properly) of the data from ``offset``.

    A gzip member ends with its uncompressed length mod 2**32: when that field matches
    ``expected`` the data is taken as complete without decompressing it (a truncated
    file ends in compressed data, which matches by chance once in 2**32); otherwise
    the stream is decompressed to its end and measured.
    """
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if expected is not None and size - offset >= 18:
            handle.seek(size - 4)
            if struct.unpack("<I", handle.read(4))[0] == expected % 2 ** 32:
                return expected, True
        handle.seek(offset)
        total, decomp, pending = 0, zlib.decompressobj(wbits=31), b""
        while True:
            chunk = pending or handle.read(1 << 20)
            pending = b""
            if not chunk:
                return total, decomp.eof
            total += len(decomp.decompress(chunk))
            if decomp.eof:
                pending = decomp.unused_data
                if not pending:
                    pending = handle.read(1 << 20)
                    if not pending:
                        return total, True
                decomp = zlib.decompressobj(wbits=31)  # another member follows


def _stream_problem(path: Path, expected: int, offset: int = 0, compressed: bool = False) -> Optional[str]:
    """Why ``expected`` bytes of voxel data at ``offset`` in ``path`` are not all there (None: they are)."""
    if compressed:
        try:
            got, complete = _gzip_length(path, offset, expected)
        except zlib.error as exc:
            return f"is damaged: its compressed data does not decompress ({exc}); copy it again"
        if not complete:
            return (f"ends early: its compressed data stops after {got:,} of {expected:,} bytes "
                    "(truncated, or still being copied); copy it again")
    else:
        got = path.stat().st_size - offset
    if got < expected:
        return (f"ends early: it holds {max(got, 0):,} of the {expected:,} bytes of voxel data its header "
                "announces; copy it again")
    return None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _nifti_layout(head: bytes) -> Optional[Tuple[str, int, int]]:
    """(magic, vox_offset, data bytes) from a NIfTI-1 header (either byte order), or None.

    (SimpleITK does not read NIfTI-2: such a file is refused before this is asked.)
    """
    for endian in "<>":
        if len(head) < 348 or struct.unpack(endian + "i", head[:4])[0] != 348:
            continue
        dims = struct.unpack(endian + "8h", head[40:56])
        bitpix = struct.unpack(endian + "h", head[72:74])[0]
        offset = int(struct.unpack(endian + "f", head[108:112])[0])
        magic = head[344:348].rstrip(b"\x00").decode("latin-1")
        n = max(1, min(int(dims[0]), 7))
        count = int(np.prod([max(1, int(d)) for d in dims[1:1 + n]], dtype=np.int64))
        return magic, offset, count * max(int(bitpix), 8) // 8
    return None


def _pair_name(path: Path) -> str:
    """A .hdr/.img pair's common name: ``v`` for ``v.hdr``, ``v.img.gz``, ..."""
    name = path.name
    for suffix in (".gz", ".hdr", ".img"):
        if name.lower().endswith(suffix):
            name = name[:-len(suffix)]
    return name


def _nifti_problem(path: Path, gz: bool) -> Optional[str]:
    if path.name.lower().endswith((".img", ".img.gz")):  # the header is the .hdr beside it
        headers = [path.with_name(_pair_name(path) + s) for s in (".hdr", ".hdr.gz")]
        header = next((h for h in headers if h.is_file()), None)
        if header is None:
            return None
        path, gz = header, _is_gzip(header)
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            head = handle.read(348)
    except (OSError, EOFError, zlib.error):
        return "is damaged: its header cannot be decompressed; copy it again"
    layout = _nifti_layout(head)
    if layout is None:
        return None
    magic, offset, nbytes = layout
    if magic == "n+1":  # header and data in one file
        return _stream_problem(path, offset + nbytes, compressed=gz)
    name = _pair_name(path)  # a .hdr/.img pair: the data is in the .img beside the header
    for candidate in (name + ".img", name + ".img.gz"):
        image = path.with_name(candidate)
        if image.is_file():
            return _stream_problem(image, offset + nbytes, compressed=_is_gzip(image))
    return None


def _header_lines(path: Path, limit: int = 1 << 16) -> List[str]:
    with open(path, "rb") as handle:
        return handle.read(limit).decode("latin-1").splitlines(keepends=True)


def _data_target(path: Path, data_file: str, offset: int) -> Tuple[Optional[Path], int]:
    if data_file in ("", "LOCAL"):
        return path, offset
    if data_file.startswith("LIST") or "%" in data_file or " " in data_file:
        return None, 0  # slice lists and patterns: left to the reader
    return path.parent / data_file, 0


def _nrrd_problem(path: Path, info: ImageInfo) -> Optional[str]:
    fields, offset, ended = {}, 0, False
    lines = _header_lines(path)
    for line in lines:
        offset += len(line.encode("latin-1"))
        if not line.strip():
            ended = True
            break
        key, sep, value = line.partition(":")
        if sep and not line.startswith("#"):
            fields[key.strip().lower()] = value.lstrip("=").strip()
    detached = "data file" in fields or "datafile" in fields
    if not ended and not (detached and offset == path.stat().st_size):
        return None  # no end of header in the first 64 KiB: left to the reader
    encoding = fields.get("encoding", "raw").lower()
    if encoding not in ("raw", "gzip", "gz") or any(k in fields for k in ("line skip", "lineskip",
                                                                              "byte skip", "byteskip")):
        return None
    target, offset = _data_target(path, fields.get("data file", fields.get("datafile", "")), offset)
    if target is None:
        return None
    if not target.is_file():
        return f"names a data file {target.name} that is missing beside it"
    return _stream_problem(target, info.data_bytes, offset, compressed=encoding != "raw")


def _metaimage_problem(path: Path, info: ImageInfo) -> Optional[str]:
    fields, offset = {}, 0
    for line in _header_lines(path):
        offset += len(line.encode("latin-1"))
        key, sep, value = line.partition("=")
        if not sep:
            return None
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    else:
        return None
    target, offset = _data_target(path, fields["ElementDataFile"], offset)
    if target is None:
        return None
    if not target.is_file():
        return f"names a data file {target.name} that is missing beside it"
    if fields.get("CompressedData", "False").lower() == "true":
        want = fields.get("CompressedDataSize", "")
        have = target.stat().st_size - offset
        if want.isdigit() and have < int(want):
            return (f"ends early: it holds {have:,} of the {int(want):,} compressed bytes its header announces; "
                    "copy it again")
        return None
    return _stream_problem(target, info.data_bytes, offset)


def data_problem(path: os.PathLike, info: ImageInfo) -> Optional[str]:
    """Why an image file's voxel data is incomplete or damaged, or None when it is all there.

    From headers and file sizes (and a gzip member's length field), with no full read
    of a good file: NIfTI (one file or a ``.hdr/.img`` pair, gzipped or not), NRRD
    (raw or gzip, data attached or detached), MetaImage (``.mha``, ``.mhd``); any
    other gzipped file has its stream decompressed to its end.
    """
    path = Path(path)
    name = path.name.lower()
    gz = _is_gzip(path)
    if name.endswith((".nii", ".nii.gz", ".hdr", ".hdr.gz", ".img", ".img.gz")):
        return _nifti_problem(path, gz)
    if name.endswith((".nrrd", ".nhdr")):
        return _nrrd_problem(path, info)
    if name.endswith((".mha", ".mhd")):
        return _metaimage_problem(path, info)
    if gz:
        try:
            got, complete = _gzip_length(path)
        except zlib.error as exc:
            return f"is damaged: its compressed data does not decompress ({exc}); copy it again"
        if not complete:
            return f"ends early: its compressed data stops after {got:,} bytes (truncated); copy it again"
    return None


def same_geometry(a, b, tolerance: float = 1e-4) -> Optional[str]:
    """None when two volumes (or :class:`ImageInfo` headers) share a voxel grid, else what differs."""
    if tuple(a.shape) != tuple(b.shape):
        return f"size {tuple(a.shape)[::-1]} vs {tuple(b.shape)[::-1]}"
    for name in ("spacing", "origin", "direction"):
        va, vb = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        scale = max(1.0, float(np.abs(va).max()))
        if np.abs(va - vb).max() > tolerance * scale:
            show = lambda v: "(" + ", ".join(f"{float(x):g}" for x in np.round(v, 4)) + ")"  # noqa: E731
            return f"{name} {show(va)} vs {show(vb)}"
    return None


# --------------------------------------------------------------------------- writing

#: the signals whose arrival must not leave temporary files behind
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """While staging, SIGTERM raises :class:`Terminated` (so ``finally`` blocks run)
    where it would otherwise kill the process at once (its default)."""
    if not _in_main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then deliver them as they would have been.

    Python runs signal handlers in the main thread between bytecodes, so swapping the
    handlers for a recorder holds a signal whichever thread the kernel delivered it to.
    """
    if not _in_main_thread():
        yield
        return
    arrived: List[int] = []
    previous = {}
    for signum in _STOP_SIGNALS:
        previous[signum] = signal.signal(signum, lambda n, frame: arrived.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)


def _make_parents(folder: Path) -> List[Path]:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        path.mkdir(exist_ok=True)
    return list(reversed(missing))


@contextmanager
def staged_outputs(paths: Sequence[os.PathLike],
                   on_commit: Optional[Callable[[], None]] = None) -> Iterator[List[Path]]:
    """Temporary paths beside ``paths`` that replace them, all together, if the block succeeds.

    Nothing under ``paths`` changes unless the block succeeds; then every temporary
    file is renamed onto its path with Ctrl-C and SIGTERM held until all are done,
    and ``on_commit`` is called. On an error, Ctrl-C or SIGTERM (raised as
    :class:`~SynPoLib.errors.Terminated` when nobody handles it) the temporary files
    and the folders created for them are removed.
    """
    targets = [Path(p) for p in paths]
    temps: List[Path] = []
    created: List[Path] = []
    committed = False
    with _terminate_raises():
        try:
            # held signals: a file or folder made here is always in the lists the cleanup reads
            with _signals_deferred():
                for target in targets:
                    created += _make_parents(target.parent if str(target.parent) else Path("."))
                    suffix = "".join(target.suffixes) or ".tmp"
                    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
                    os.close(fd)
                    temps.append(Path(tmp))
            yield list(temps)
            # mkstemp creates 0600 files; results get the permissions of any new file
            umask = os.umask(0)
            os.umask(umask)
            with _signals_deferred():
                for tmp, target in zip(temps, targets):
                    os.chmod(tmp, 0o666 & ~umask)
                    os.replace(tmp, target)
                committed = True
                if on_commit is not None:
                    on_commit()
        finally:
            with _signals_deferred():
                for tmp in temps:
                    try:
                        tmp.unlink()
                    except FileNotFoundError:
                        pass
                if not committed:
                    for folder in reversed(created):
                        try:
                            folder.rmdir()
                        except OSError:
                            pass


@contextmanager
def atomic_path(path: os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds."""
    with staged_outputs([path]) as (tmp,):
        yield tmp


def segmentation_dict(mask: np.ndarray, reference: Volume, name: str = "SynPo",
                      color: Sequence[float] = DEFAULT_COLOR, segment_id: Optional[str] = None) -> dict:
    """slicerio's segmentation structure for one binary segment on the reference grid."""
    import slicerio

    mask = np.asarray(mask)
    if mask.shape != reference.array.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the reference volume's {reference.array.shape}")
    ijk = np.transpose(mask > 0, (2, 1, 0))  # (k, j, i) -> (i, j, k)
    seg = slicerio.create_segmentation(ijk.shape, reference.ijk_to_lps)
    slicerio.add_segment(seg, ijk, {"id": segment_id or name.replace(" ", "_"), "name": name,
                                     "color": [float(c) for c in color]})
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    seg["masterRepresentation"] = "Binary labelmap"
    return seg


def segments_dict(masks: Sequence[Tuple[str, np.ndarray, Sequence[float]]], reference: Volume) -> dict:
    """slicerio's segmentation structure for several segments (name, mask, colour) on the
    reference grid; segments that overlap go to separate layers, as Slicer keeps them."""
    import slicerio

    seg = None
    used = set()
    for name, mask, color in masks:
        mask = np.asarray(mask)
        if mask.shape != reference.array.shape:
            raise ValueError(f"mask shape {mask.shape} differs from the reference volume's {reference.array.shape}")
        ijk = np.transpose(mask > 0, (2, 1, 0))  # (k, j, i) -> (i, j, k)
        if seg is None:
            seg = slicerio.create_segmentation(ijk.shape, reference.ijk_to_lps)
        base = "".join(ch if ch.isalnum() else "_" for ch in name) or "segment"
        segment_id, n = base, 1
        while segment_id in used:
            n += 1
            segment_id = f"{base}_{n}"
        used.add(segment_id)
        slicerio.add_segment(seg, ijk, {"id": segment_id, "name": name, "color": [float(c) for c in color]})
    if seg is None:
        raise ValueError("give at least one segment")
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    seg["masterRepresentation"] = "Binary labelmap"
    return seg


def write_label_image(path: os.PathLike, labels: np.ndarray, reference: Volume) -> Path:
    """Write a label image (several label values) on the reference grid, in the smallest
    unsigned type that holds its values."""
    labels = np.asarray(labels)
    dtype = np.uint8 if int(labels.max(initial=0)) < 256 else np.uint16 if int(labels.max()) < 65536 else np.uint32
    with atomic_path(path) as tmp:
        sitk.WriteImage(reference.to_image(labels.astype(dtype)), str(tmp), True)
    return Path(path)


def write_segmentation(path: os.PathLike, mask: np.ndarray, reference: Volume, name: str = "SynPo",
                       color: Sequence[float] = DEFAULT_COLOR) -> Path:
    """Write a one-segment ``.seg.nrrd`` that Slicer opens on the reference volume's grid."""
    import slicerio

    seg = segmentation_dict(mask, reference, name=name, color=color)
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), seg)
    return Path(path)


def write_labelmap(path: os.PathLike, mask: np.ndarray, reference: Volume, label: int = 1) -> Path:
    """Write the mask as a labelmap image (NIfTI, NRRD, ...) on the reference grid."""
    data = (np.asarray(mask) > 0).astype(np.uint8) * np.uint8(label)
    with atomic_path(path) as tmp:
        sitk.WriteImage(reference.to_image(data), str(tmp), True)
    return Path(path)
