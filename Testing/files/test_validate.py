"""The checks made before any work: complete files in every format, headers only, outputs staged.

The catalogue (Testing/test_bad_input_catalogue.py) shows what a user sees; these tests
pin the parts underneath: which formats' truncation is caught (SimpleITK zero-fills a
truncated NIfTI and reads on), that a whole request is checked from headers without
reading voxels (what a batch of hundreds of cases relies on), and that staged outputs
appear together or not at all.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, ellipsoid_volume

from SynPoLib.errors import InputError
from SynPoLib.files import SegmentRequest, check_request
from SynPoLib.io import inspect_image, read_volume, staged_outputs
from SynPoLib.paths import check_output_file, same_file

VOLUME = (np.random.default_rng(0).random((20, 30, 40)) * 1000).astype(np.float32) + 1

#: (file name, compressed): every format whose truncation is caught from its header
FORMATS = [("v.nii", False), ("v.nii.gz", True), ("v.hdr", False), ("v.img.gz", True), ("v.nrrd", False),
           ("v.nrrd", True), ("v.nhdr", False), ("v.nhdr", True), ("v.mha", False), ("v.mha", True),
           ("v.mhd", False), ("v.mhd", True), ("v.gipl.gz", True)]


def _write(folder: Path, name: str, compressed: bool) -> Path:
    path = folder / name
    sitk.WriteImage(sitk.GetImageFromArray(VOLUME), str(path), compressed)
    return path


def _largest(folder: Path) -> Path:
    return max(folder.iterdir(), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("name, compressed", FORMATS, ids=[f"{n}{'-z' if c else ''}" for n, c in FORMATS])
def test_a_whole_file_passes_and_a_truncated_one_is_refused(tmp_path, name, compressed):
    path = _write(tmp_path, name, compressed)
    info = inspect_image(path, "--query")
    assert info.shape == VOLUME.shape and info.data_bytes == VOLUME.nbytes
    np.testing.assert_array_equal(read_volume(path).array, VOLUME)
    data_file = _largest(tmp_path)  # the data: the file itself, or its .img / .raw / .zraw
    data = data_file.read_bytes()
    data_file.write_bytes(data[:int(len(data) * 0.6)])
    with pytest.raises(InputError, match=r"^--query .* (ends early|is damaged)"):
        inspect_image(path, "--query")
    with pytest.raises(InputError, match="ends early|is damaged"):
        read_volume(path)


def test_truncated_nifti_is_what_simpleitk_fills_with_zeros(tmp_path):
    """Why the check exists: SimpleITK reads a cut .nii.gz without a word, the cut part zero."""
    path = _write(tmp_path, "v.nii.gz", True)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.6)])
    silently = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    assert silently.shape == VOLUME.shape and (silently == 0).mean() > 0.3


def test_big_endian_nifti_and_multi_member_gzip_are_read_to_their_end(tmp_path):
    import nibabel as nib

    big = tmp_path / "big_endian.nii"
    image = nib.Nifti1Image(VOLUME.transpose(2, 1, 0).astype(">f4"), np.diag([0.9, 1.1, 2.0, 1.0]),
                            nib.Nifti1Header(endianness=">"))
    nib.save(image, str(big))
    assert big.read_bytes()[:4] == (348).to_bytes(4, "big")
    assert inspect_image(big).shape == VOLUME.shape
    data = big.read_bytes()
    big.write_bytes(data[:-1000])
    with pytest.raises(InputError, match="ends early"):
        inspect_image(big)
    # a .nii.gz made of two gzip members (as bgzip or a concatenation writes it): complete
    raw = _write(tmp_path, "one.nii", False).read_bytes()
    multi = tmp_path / "multi.nii.gz"
    half = len(raw) // 2
    multi.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:]))
    np.testing.assert_array_equal(read_volume(multi).array, VOLUME)
    multi.write_bytes(gzip.compress(raw[:half]) + gzip.compress(raw[half:])[:-100])
    with pytest.raises(InputError, match="ends early"):
        inspect_image(multi)


def _sparse_nhdr(folder: Path, shape=(512, 1024, 1024)) -> Path:
    """A detached NRRD header over a 2 GiB sparse data file: nothing to read, everything to check."""
    raw = folder / "big.raw"
    with open(raw, "wb") as handle:
        handle.truncate(int(np.prod(shape)) * 4)
    header = folder / "big.nhdr"
    header.write_text("NRRD0004\ntype: float\ndimension: 3\nspace: left-posterior-superior\n"
                      f"sizes: {shape[2]} {shape[1]} {shape[0]}\n"
                      "space directions: (1,0,0) (0,1,0) (0,0,1)\nspace origin: (0,0,0)\n"
                      "kinds: domain domain domain\nendian: little\nencoding: raw\ndata file: big.raw\n")
    return header


def test_a_request_is_checked_from_headers_without_reading_voxels(tmp_path):
    """What a batch relies on: checking a case costs its headers, not its volumes.

    The query is a 2 GiB volume (a sparse file); the check runs in a process limited to
    1 GiB of memory, so reading the voxels would fail it.
    """
    query = _sparse_nhdr(tmp_path)
    mask = tmp_path / "m.nhdr"
    mask.write_text(query.read_text().replace("type: float", "type: uchar").replace("big.raw", "m.raw"))
    with open(tmp_path / "m.raw", "wb") as handle:
        handle.truncate(512 * 1024 * 1024)
    script = (
        "import resource, sys, time\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from SynPoLib.files import SegmentRequest, check_request\n"
        "t = time.perf_counter()\n"
        f"checked = check_request(SegmentRequest(query={str(query)!r}, support_mask={str(mask)!r}, "
        f"support_slice=[256], out={str(tmp_path / 'o' / 'r.seg.nrrd')!r}, labelmap={str(tmp_path / 'o' / 'r.nrrd')!r}))\n"
        "print(checked.query.shape, round(time.perf_counter() - t, 3))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shape, seconds = done.stdout.rsplit(" ", 1)
    assert shape == "(512, 1024, 1024)", done.stdout
    print(f"check_request on a 2 GiB volume: {float(seconds) * 1000:.0f} ms")  # measured 14 ms
    assert not (tmp_path / "o").exists()  # checking writes nothing


def test_check_request_is_the_rule_segment_files_applies(tmp_path):
    """The same request object, the same refusal, whether checked alone or run."""
    from SynPoLib.files import segment_files

    volume, mask = ellipsoid_volume(shape=(8, 20, 24))
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "q.nrrd"))
    sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8)), str(tmp_path / "m.nrrd"))
    request = SegmentRequest(query=str(tmp_path / "q.nrrd"), support_mask=str(tmp_path / "m.nrrd"),
                             support_slice=[4], out=str(tmp_path / "q.nrrd"))
    with pytest.raises(InputError) as alone:
        check_request(request)
    with pytest.raises(InputError) as run:
        segment_files(request)
    assert str(alone.value) == str(run.value) and "is the --query file" in str(alone.value)


def test_paths_are_compared_resolved_and_by_identity(tmp_path):
    a = tmp_path / "a.nrrd"
    a.write_bytes(b"x")
    (tmp_path / "link.nrrd").symlink_to(a)
    os.link(a, tmp_path / "hard.nrrd")
    (tmp_path / "sub").mkdir()
    assert same_file(a, tmp_path / "link.nrrd") and same_file(a, tmp_path / "hard.nrrd")
    assert same_file(a, tmp_path / "sub" / ".." / "a.nrrd")
    assert not same_file(a, tmp_path / "b.nrrd") and not same_file(tmp_path / "b.nrrd", tmp_path / "c.nrrd")


def test_the_writability_probe_leaves_nothing(tmp_path):
    check_output_file(tmp_path / "new" / "deeper" / "r.seg.nrrd", "--out")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="cannot write into /proc|cannot write into /sys"):
        check_output_file("/proc/synpo/r.seg.nrrd", "--out")


def test_staged_outputs_appear_together_or_not_at_all(tmp_path):
    targets = [tmp_path / "out" / "a.seg.nrrd", tmp_path / "out" / "b" / "c.json"]
    with pytest.raises(RuntimeError):
        with staged_outputs(targets) as temps:
            for t in temps:
                t.write_text("partial")
            raise RuntimeError("the run failed while writing")
    assert not (tmp_path / "out").exists()  # no temporary file, no folder made for them
    with pytest.raises(KeyboardInterrupt):
        with staged_outputs(targets) as temps:
            temps[0].write_text("partial")
            raise KeyboardInterrupt
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    targets[0].write_text("old")
    committed = []
    with staged_outputs(targets, on_commit=lambda: committed.append(True)) as temps:
        for t, text in zip(temps, ("new a", "new c")):
            t.write_text(text)
        assert targets[0].read_text() == "old"  # nothing moves before the block succeeds
    assert [t.read_text() for t in targets] == ["new a", "new c"] and committed == [True]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["a.seg.nrrd", "b", "c.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert targets[0].stat().st_mode & 0o777 == 0o666 & ~umask
