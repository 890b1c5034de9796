"""The batch manifest: CSV and JSON give the same cases; shared values and rows; errors name the row."""

import json

import pytest

from SynPoLib.errors import InputError
from SynPoLib.files import read_manifest
from SynPoLib.files.status import config_fingerprint, finished
from SynPoLib.files.segment import SegmentRequest


def write(path, text):
    path.write_text(text)
    return path


def test_csv_and_json_give_the_same_cases(tmp_path):
    csv_file = write(tmp_path / "m.csv", "query,support_slice,label,reference,output\n"
                                         "scans/p1.nii.gz,81,77,refs/p1.nii.gz,\n"
                                         "scans/p2.nrrd,80 82,,,second\n")
    json_file = write(tmp_path / "m.json", json.dumps([
        {"query": "scans/p1.nii.gz", "support_slice": 81, "label": 77, "reference": "refs/p1.nii.gz"},
        {"query": "scans/p2.nrrd", "support_slice": [80, 82], "output": "second"}]))
    shared = {"support_mask": "atlas.nii.gz", "label": 5}
    from_csv = read_manifest(csv_file, shared)
    from_json = read_manifest(json_file, shared)
    assert from_csv == from_json
    first, second = from_csv
    assert first.name == "p1" and second.name == "second"          # default name: the query's stem
    assert first.query == str(tmp_path / "scans/p1.nii.gz")         # relative to the manifest's folder
    assert first.support_slice == (81,) and second.support_slice == (80, 82)
    assert first.label == 77 and second.label == 5                  # the row's own value wins over the shared one
    assert second.reference is None and second.support is None
    assert first.support_mask.endswith("atlas.nii.gz")


def test_json_shared_block_and_precedence(tmp_path):
    manifest = write(tmp_path / "m.json", json.dumps({
        "shared": {"support_mask": "labels.nii.gz", "support_slice": 3, "axis": 2, "label": 4},
        "cases": [{"query": "a.nii.gz"}, {"query": "b.nii.gz", "axis": 1}]}))
    a, b = read_manifest(manifest, {"label": 9})
    assert (a.axis, b.axis) == (2, 1)
    assert a.label == 9 and b.label == 9           # the command line's shared value beats the file's shared block
    assert a.support_mask == str(tmp_path / "labels.nii.gz")


@pytest.mark.parametrize("text, message", [
    ("query,support_slice\n", "lists no case"),
    ("query,colour\na.nii.gz,1\n", "unknown field(s) colour"),
    ("query,support_slice\na.nii.gz,\n", "row 1: support_slice is missing"),
    ("query,support_slice\na.nii.gz,x\n", "row 1: support_slice must be an integer"),
    ("query,support_slice,axis\na.nii.gz,3,4\n", "row 1: axis must be 0, 1 or 2"),
    ("query,support_slice,range\na.nii.gz,3,7\n", "row 1: --range must look like START:STOP"),
    ("query,support_slice\na.nii.gz,3\nsub/a.nrrd,4\n", "rows 1 and 2 both write 'a'"),
    ("query,support_slice,output\na.nii.gz,3,../up\n", "output name '../up' must be letters"),
    ("query,support_slice\na.nii.gz,3,extra\n", "row 1: more cells than header columns"),
    ("support_slice\n3\n", "row 1: query is missing"),
    (",support_slice\n,3\n", "unknown field(s) (a column with no name)"),
])
def test_bad_manifests_name_the_row(tmp_path, text, message):
    manifest = write(tmp_path / "m.csv", text)
    with pytest.raises(InputError) as err:
        read_manifest(manifest, {"support_mask": "m.nii.gz"})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_other_manifest_problems(tmp_path):
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(InputError, match="expected a .csv, .tsv or .json"):
        read_manifest(write(tmp_path / "m.txt", "query\n"))
    with pytest.raises(InputError, match="not valid JSON"):
        read_manifest(write(tmp_path / "m.json", "[{"))
    with pytest.raises(InputError, match="output must be given per row"):
        read_manifest(write(tmp_path / "s.json", json.dumps({"shared": {"output": "x"}, "cases": [{"query": "a"}]})))
    with pytest.raises(InputError, match="unknown field"):
        read_manifest([{"query": "a.nii.gz"}], {"support_mask": "m", "support_slice": [1], "window": [0, 1]})


def test_fingerprint_follows_what_changes_the_result():
    base = SegmentRequest(query="q.nii.gz", support_mask="m.nii.gz", support_slice=[4], out="o.seg.nrrd")
    same_but_elsewhere = SegmentRequest(query="other/q.nii.gz", support_mask="m2.nii.gz", support_slice=[4],
                                        out="x/o.seg.nrrd", device="cpu", batch_size=8, quiet=True)
    assert config_fingerprint(base) == config_fingerprint(same_but_elsewhere)  # paths and devices do not count
    for change in ({"set": ["points.n_negative=2"]}, {"support_slice": [5]}, {"label": 3}, {"window": [0, 100]},
                   {"mode": "propagate"}, {"backend": "synpo"}):
        edited = SegmentRequest(**{**base.__dict__, **change})
        assert config_fingerprint(edited) != config_fingerprint(base), change


def test_finished_needs_the_same_inputs_config_and_outputs(tmp_path):
    out = write(tmp_path / "r.seg.nrrd", "result")
    from SynPoLib.files.status import file_digest

    inputs = {"query": {"path": "q", "sha256": "aa"}}
    record = {"version": 1, "state": "done", "fingerprint": "f1", "inputs": inputs,
              "outputs": {"r.seg.nrrd": file_digest(out)}}
    assert finished(record, inputs, "f1", tmp_path) == (True, "")
    assert finished(record, inputs, "f2", tmp_path) == (False, "configuration changed")
    assert finished(record, {"query": {"path": "q", "sha256": "bb"}}, "f1", tmp_path) == \
        (False, "input changed: query")
    assert finished({**record, "state": "failed"}, inputs, "f1", tmp_path)[0] is False
    assert finished(None, inputs, "f1", tmp_path) == (False, "not run yet")
    out.write_text("resul")  # truncated after the fact
    assert finished(record, inputs, "f1", tmp_path) == (False, "output r.seg.nrrd changed since it was written")
    out.unlink()
    assert finished(record, inputs, "f1", tmp_path) == (False, "output r.seg.nrrd is missing")
