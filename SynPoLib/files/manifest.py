"""A batch's manifest: one case per row, as CSV or JSON with the same fields.

Fields (CSV columns, JSON keys), each optional in a row when a shared value is given:

==================  ==========================================================
``query``           the volume to segment (required in every row)
``support``         the volume the labelled slice lies in (default: the query)
``support_mask``    the labelmap on the support's grid
``support_slice``   labelled slice(s): ``81`` or ``80 81`` (JSON: a number or a list)
``label``           the structure's value in the support mask
``axis``            slicing axis of the (k, j, i) array, 0, 1 or 2
``range``           query slices ``START:STOP`` (half-open)
``reference``       a reference labelmap on the query's grid (Dice in the summary)
``reference_label`` its label (default: ``label``)
``output``          the case's name: its outputs are ``cases/<output>/<output>.seg.nrrd``
                    and beside it (default: the query's file name without extension)
==================  ==========================================================

A JSON manifest is a list of such objects, or ``{"shared": {...}, "cases": [...]}``
where ``shared`` holds values for every row. A row's own value wins over the command
line's shared options, which win over the manifest's ``shared`` block, so one
labelled example serves a whole cohort while a few rows bring their own. Relative
paths are relative to the manifest's folder. Every problem is an
:class:`~SynPoLib.errors.InputError` naming the manifest, the row and the field.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..errors import InputError
from .inputs import parse_range

#: the manifest's fields, in the order the summary shows them
FIELDS = ("query", "support", "support_mask", "support_slice", "label", "axis", "range", "reference",
          "reference_label", "output")
#: fields that name files (relative paths are taken from the manifest's folder)
PATH_FIELDS = ("query", "support", "support_mask", "reference")
#: fields that may come from the shared options (``output`` and ``query`` are per row)
SHARED_FIELDS = tuple(f for f in FIELDS if f not in ("query", "output"))

#: extensions stripped from a query's file name to make a case name
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd", ".gz")
#: a case name becomes a folder and file names: letters, digits, '.', '_', '-' (not first '.')
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class Case:
    """One manifest row with shared values filled in and paths made absolute."""

    #: 1-based row number in the manifest (CSV: data rows after the header)
    row: int
    name: str
    query: str
    support_mask: str
    support_slice: Tuple[int, ...]
    support: Optional[str] = None
    label: Optional[int] = None
    axis: int = 0
    slice_range: Optional[str] = None
    reference: Optional[str] = None
    reference_label: Optional[int] = None

    @property
    def inputs(self) -> Dict[str, str]:
        """role -> path of every file the case reads."""
        return {role: path for role, path in (("query", self.query), ("support", self.support),
                                              ("support_mask", self.support_mask), ("reference", self.reference))
                if path}


Source = Union[str, os.PathLike, Sequence[Mapping[str, Any]]]


def read_manifest(source: Source, shared: Optional[Mapping[str, Any]] = None) -> List[Case]:
    """The cases of a manifest file (``.csv`` or ``.json``) or of a list of dicts.

    ``shared`` holds values for fields a row leaves empty (the command line's
    ``--support``, ``--support-mask``, ``--support-slice``, ``--label``, ...; paths in
    it are taken as given, relative to the current folder).
    """
    shared = {k: v for k, v in (shared or {}).items() if v is not None and v != ()}
    unknown = sorted(set(shared) - set(SHARED_FIELDS))
    if unknown:
        raise InputError(f"shared manifest values: unknown field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(SHARED_FIELDS)}")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(path)
        base = path.resolve().parent
        rows, file_shared = _read_rows(path)
    else:
        label, base = "manifest", Path.cwd()
        rows, file_shared = [dict(r) for r in source], {}
    if not rows:
        raise InputError(f"{label} lists no case")
    merged_shared = {k: _absolute(k, v, base) for k, v in file_shared.items()}
    merged_shared.update({k: _absolute(k, v, Path.cwd()) for k, v in shared.items()})
    cases = [_case(label, n, row, merged_shared, base) for n, row in enumerate(rows, start=1)]
    _check_names(label, cases)
    return cases


def _read_rows(path: Path) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    if not path.exists():
        raise InputError(f"manifest not found: {path}")
    if not path.is_file():
        raise InputError(f"manifest must be a file, got {path}")
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM from spreadsheet exports is not a column name
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {path}: {exc}") from None
    if suffix == ".json":
        return _json_rows(path, text)
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, text, "\t" if suffix == ".tsv" else ","), {}
    raise InputError(f"manifest {path}: expected a .csv, .tsv or .json file")


def _csv_rows(path: Path, text: str, delimiter: str) -> List[Dict[str, Any]]:
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise InputError(f"manifest {path} is empty: it needs a header row ({', '.join(FIELDS)})")
    _check_keys(f"manifest {path} header", header)
    rows = []
    for raw in reader:
        if None in raw:  # more cells than header columns
            raise InputError(f"manifest {path} row {len(rows) + 1}: more cells than header columns")
        row = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in raw.items()}
        if not any(row.values()):
            continue  # blank line
        rows.append(row)
    return rows


def _json_rows(path: Path, text: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"manifest {path} is not valid JSON: {exc}") from None
    shared: Dict[str, Any] = {}
    if isinstance(data, dict):
        extra = sorted(set(data) - {"cases", "shared"})
        if extra or "cases" not in data:
            raise InputError(f"manifest {path}: expected a list of cases or {{\"shared\": {{...}}, \"cases\": [...]}}"
                             + (f", not the key(s) {', '.join(extra)}" if extra else ""))
        shared = data.get("shared") or {}
        if not isinstance(shared, dict):
            raise InputError(f"manifest {path}: \"shared\" must be an object of fields")
        _check_keys(f"manifest {path} shared", shared)
        bad = sorted(set(shared) - set(SHARED_FIELDS))
        if bad:
            raise InputError(f"manifest {path} shared: {', '.join(bad)} must be given per row")
        data = data["cases"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"manifest {path}: the cases must be a list of objects")
    for n, row in enumerate(data, start=1):
        _check_keys(f"manifest {path} row {n}", row)
    return data, shared


def _check_keys(where: str, keys) -> None:
    unknown = [str(k) if str(k).strip() else "(a column with no name)" for k in keys if k not in FIELDS]
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")


def _absolute(field: str, value: Any, base: Path) -> Any:
    if field in PATH_FIELDS and isinstance(value, (str, os.PathLike)) and str(value):
        return str((base / Path(value).expanduser()))
    return value


def _case(label: str, n: int, row: Mapping[str, Any], shared: Mapping[str, Any], base: Path) -> Case:
    where = f"{label} row {n}"
    values: Dict[str, Any] = dict(shared)
    for key, value in row.items():
        if key not in FIELDS:
            raise InputError(f"{where}: unknown field {key!r}; known: {', '.join(FIELDS)}")
        if value is None or (isinstance(value, str) and not value.strip()):
            continue  # empty cell: the shared value applies
        values[key] = _absolute(key, value, base)
    for key in ("query", "support_mask", "support_slice"):
        if key not in values:
            hint = "" if key == "query" else " (or give it once for every row: --" + key.replace("_", "-") + ")"
            raise InputError(f"{where}: {key} is missing{hint}")
    slices = _slices(where, values["support_slice"])
    label_value = _integer(where, "label", values.get("label"))
    axis = _integer(where, "axis", values.get("axis", 0))
    if axis not in (0, 1, 2):
        raise InputError(f"{where}: axis must be 0, 1 or 2, got {values.get('axis')!r}")
    slice_range = values.get("range")
    if slice_range is not None:
        slice_range = str(slice_range)
        try:
            parse_range(slice_range)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
    name = values.get("output")
    name = str(name).strip() if name is not None else _stem(values["query"])
    if name.endswith(".seg.nrrd"):
        name = name[:-len(".seg.nrrd")]
    if not NAME_PATTERN.match(name):
        raise InputError(f"{where}: output name {name!r} must be letters, digits, '.', '_' or '-' "
                         "(it names the case's folder and files)")
    return Case(row=n, name=name, query=str(values["query"]), support_mask=str(values["support_mask"]),
                support_slice=slices, support=str(values["support"]) if values.get("support") else None,
                label=label_value, axis=axis, slice_range=slice_range,
                reference=str(values["reference"]) if values.get("reference") else None,
                reference_label=_integer(where, "reference_label", values.get("reference_label")))


def _integer(where: str, field: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"{where}: {field} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(f"{where}: {field} must be an integer, got {value!r}") from None


def _slices(where: str, value: Any) -> Tuple[int, ...]:
    items = value if isinstance(value, (list, tuple)) else re.split(r"[\s;,]+", str(value).strip())
    out = tuple(_integer(where, "support_slice", v) for v in items if str(v).strip())
    if not out:
        raise InputError(f"{where}: support_slice is empty")
    return out


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)]
    return Path(name).stem


def _check_names(label: str, cases: Sequence[Case]) -> None:
    """Each case writes its own folder: two rows with one name would overwrite each other."""
    seen: Dict[str, Case] = {}
    for case in cases:
        key = case.name.casefold()  # one folder on case-insensitive file systems
        if key in seen:
            raise InputError(f"{label} rows {seen[key].row} and {case.row} both write {case.name!r}: "
                             "give each an 'output' name")
        seen[key] = case


__all__ = ["Case", "FIELDS", "PATH_FIELDS", "SHARED_FIELDS", "read_manifest"]
