"""Weights management on real files: registry, cache, download, checksums, offline mode.

Model hubs are unreachable here, so downloads go through the real ``huggingface_hub``
client to a LOCAL hub: an HTTP server on 127.0.0.1 that answers the hub's
``/{repo}/resolve/{revision}/{file}`` protocol (X-Repo-Commit, ETag = the LFS SHA-256,
Content-Length), reached the way users reach a mirror (``$HF_ENDPOINT``). Offline
tests replace the socket layer with a guard that records (and refuses) every
connection attempt, proving offline mode never touches the network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from SynPoLib.backends import weights
from SynPoLib.cli import main
from SynPoLib.backends.weights import ChecksumMismatch, ModelFile, WeightsMissing

TEMPLATES = Path("/usr/share/mricron/templates")


# --------------------------------------------------------------------------- local hub

class LocalHub:
    """A minimal Hugging Face hub: serves ``files[(repo_id, filename)]`` bytes."""

    def __init__(self) -> None:
        self.files = {}
        self.etags = {}  # (repo, filename) -> etag to announce instead of the real digest
        self.requests = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _lookup(self):
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return None, None
                key = ("/".join(parts[:2]), "/".join(parts[4:]))
                return key, hub.files.get(key)

            def _headers(self, key, data):
                self.send_response(200)
                digest = hub.etags.get(key) or hashlib.sha256(data).hexdigest()
                self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
                self.send_header("ETag", f'"{digest}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

            def do_HEAD(self):
                hub.requests.append(("HEAD", self.path))
                key, data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.end_headers()
                    return
                self._headers(key, data)

            def do_GET(self):
                hub.requests.append(("GET", self.path))
                key, data = self._lookup()
                if data is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self._headers(key, data)
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gets(self):
        """File downloads (huggingface_hub also fetches its own /api/ metadata)."""
        return [r for r in self.requests if r[0] == "GET" and "/resolve/" in r[1]]



@pytest.fixture
def hub(monkeypatch):
    server = LocalHub()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    yield server
    server.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty weights folder; no offline flags inherited from the environment."""
    directory = tmp_path / "weights"
    monkeypatch.setenv("SYNPO_WEIGHTS_DIR", str(directory))
    for var in ("SYNPO_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for model in weights.REGISTRY.values():
        monkeypatch.delenv(model.env_var, raising=False)
    return directory


@pytest.fixture
def no_network(monkeypatch):
    """Every connection attempt is recorded and refused."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _model(monkeypatch, name="test-model", payload=b"", sha=True, size=True, repo="synpo-test/model") -> ModelFile:
    model = ModelFile(name=name, title=f"test model {name}", filename="weights.bin", licence="Apache-2.0",
                      repo_id=repo, size=len(payload) if size else None,
                      sha256=hashlib.sha256(payload).hexdigest() if sha else None, family="test")
    monkeypatch.setitem(weights.REGISTRY, name, model)
    return model


PAYLOAD = np.random.default_rng(1).bytes(300_000)


# --------------------------------------------------------------------------- registry

def test_registry_has_every_model_with_licence_and_source():
    for size in ("tiny", "small", "base-plus", "large"):
        m = weights.get(f"sam2.1-hiera-{size}")
        assert m.repo_id == f"facebook/sam2.1-hiera-{size}" and m.licence == "Apache-2.0"
        assert len(m.sha256) == 64 and m.size > 100_000_000
    for arch in ("vits14", "vitb14", "vitl14", "vitg14"):
        for suffix in ("", "-reg4"):
            m = weights.get(f"dinov2-{arch}{suffix}")
            assert m.repo_id.startswith("timm/vit_") and m.repo_id.endswith("_dinov2.lvd142m")
            assert m.filename == "model.safetensors"
    sinder = weights.get("sinder-vitg14")
    assert sinder.repo_id is None and "sinder" in sinder.url
    assert weights.get("sam2.1-hiera-large").env_var == "SYNPO_WEIGHTS_SAM2_1_HIERA_LARGE"
    with pytest.raises(weights.WeightsError, match="unknown model"):
        weights.get("sam3")


def test_cache_folder_argument_beats_env_beats_default(monkeypatch, tmp_path):
    monkeypatch.delenv("SYNPO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.weights_dir() == tmp_path / "xdg" / "synpo" / "weights"
    monkeypatch.setenv("SYNPO_WEIGHTS_DIR", str(tmp_path / "env"))
    assert weights.weights_dir() == tmp_path / "env"
    assert weights.weights_dir(tmp_path / "arg") == tmp_path / "arg"
    m = weights.get("sam2.1-hiera-large")
    assert weights.cached_path(m) == tmp_path / "env" / "sam2.1-hiera-large" / "sam2.1_hiera_large.pt"


# --------------------------------------------------------------------------- download

def test_download_through_huggingface_hub_verifies_and_stamps(hub, cache, monkeypatch, capfd):
    model = _model(monkeypatch, payload=PAYLOAD)
    hub.files[(model.repo_id, model.filename)] = PAYLOAD
    path = weights.download(model.name)
    assert path == cache / model.name / model.filename
    assert path.read_bytes() == PAYLOAD
    err = capfd.readouterr().err
    assert f"downloading test model {model.name}" in err and "100%" in err  # message and progress bar
    assert len(hub.gets()) == 1
    # used from the cache from now on: no request, no re-hash
    seen = len(hub.requests)
    hashed = []
    real = weights.sha256_file
    monkeypatch.setattr(weights, "sha256_file", lambda p, progress=None: hashed.append(p) or real(p))
    assert weights.resolve(model.name) == path
    assert len(hub.requests) == seen and hashed == []


def test_download_progress_callback(hub, cache, monkeypatch):
    model = _model(monkeypatch, payload=PAYLOAD)
    hub.files[(model.repo_id, model.filename)] = PAYLOAD
    seen = []
    weights.download(model.name, progress=lambda done, total: seen.append((done, total)), log=lambda s: None)
    assert seen and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))


def test_hub_digest_is_checked_when_none_is_published(hub, cache, monkeypatch):
    model = _model(monkeypatch, payload=PAYLOAD, sha=False, size=False)
    hub.files[(model.repo_id, model.filename)] = PAYLOAD
    path = weights.download(model.name)
    stamp = path.with_name(path.name + weights.STAMP_SUFFIX).read_text()
    assert hashlib.sha256(PAYLOAD).hexdigest() in stamp
    # the file changes on disk afterwards: refused against the recorded digest
    time.sleep(0.01)
    path.write_bytes(PAYLOAD[:-10] + b"0123456789")
    with pytest.raises(ChecksumMismatch, match=f"{path}.*expected {hashlib.sha256(PAYLOAD).hexdigest()}"):
        weights.resolve(model.name)


def test_corrupted_download_is_refused_and_not_left_in_the_cache(hub, cache, monkeypatch):
    model = _model(monkeypatch, payload=PAYLOAD, sha=False, size=False)
    corrupted = bytearray(PAYLOAD)
    corrupted[1000] ^= 0xFF
    hub.files[(model.repo_id, model.filename)] = bytes(corrupted)
    hub.etags[(model.repo_id, model.filename)] = hashlib.sha256(PAYLOAD).hexdigest()  # what the hub promises
    with pytest.raises(ChecksumMismatch, match="weights.bin has SHA-256"):
        weights.download(model.name)
    assert not (cache / model.name / model.filename).exists()


def test_hub_file_that_differs_from_the_registry_is_not_downloaded(hub, cache, monkeypatch):
    model = _model(monkeypatch, payload=PAYLOAD)
    other = PAYLOAD[::-1]
    hub.files[(model.repo_id, model.filename)] = other
    with pytest.raises(ChecksumMismatch, match="published file changed; nothing was downloaded"):
        weights.download(model.name)
    assert hub.gets() == []


def test_unreachable_network_gives_the_instructions(cache, monkeypatch, no_network):
    monkeypatch.setenv("HF_ENDPOINT", "http://hub.invalid")
    start = time.perf_counter()
    with pytest.raises(WeightsMissing) as info:
        weights.resolve("sam2.1-hiera-tiny")
    assert time.perf_counter() - start < 15
    text = str(info.value)
    assert "download failed" in text and "synpo weights download sam2.1-hiera-tiny" in text
    assert str(cache / "sam2.1-hiera-tiny" / "sam2.1_hiera_tiny.pt") in text
    assert no_network  # it did try: not offline


# --------------------------------------------------------------------------- offline

@pytest.mark.parametrize("flag", ["SYNPO_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_touches_the_network_and_says_where_the_file_goes(cache, monkeypatch, no_network, flag):
    monkeypatch.setenv(flag, "1")
    with pytest.raises(WeightsMissing) as info:
        weights.resolve("sam2.1-hiera-large")
    text = str(info.value)
    target = cache / "sam2.1-hiera-large" / "sam2.1_hiera_large.pt"
    assert f"expected at: {target}" in text
    assert "synpo weights download sam2.1-hiera-large" in text
    assert "https://huggingface.co/facebook/sam2.1-hiera-large/resolve/main/sam2.1_hiera_large.pt" in text
    assert "SYNPO_WEIGHTS_SAM2_1_HIERA_LARGE" in text
    assert no_network == []


def test_manual_only_model_says_where_to_get_it(cache, no_network):
    expected = r"(?s)not on the Hugging Face hub.*haoqiwang/sinder.*sinder\.pth.*--dino-checkpoint"
    with pytest.raises(WeightsMissing, match=expected):
        weights.resolve("sinder-vitg14")
    assert no_network == []


def test_local_override_per_model(cache, monkeypatch, tmp_path, no_network):
    local = tmp_path / "my_sam.pt"
    local.write_bytes(b"x")
    assert weights.resolve("sam2.1-hiera-large", path=local) == local
    monkeypatch.setenv("SYNPO_WEIGHTS_SAM2_1_HIERA_LARGE", str(local))
    assert weights.resolve("sam2.1-hiera-large") == local
    monkeypatch.setenv("SYNPO_WEIGHTS_SAM2_1_HIERA_LARGE", str(tmp_path / "gone.pt"))
    with pytest.raises(WeightsMissing, match=r"set in \$SYNPO_WEIGHTS_SAM2_1_HIERA_LARGE does not exist: .*gone\.pt"):
        weights.resolve("sam2.1-hiera-large")
    assert no_network == []


# --------------------------------------------------------------------------- checksums of real entries

def test_truncated_or_wrong_published_file_is_refused(cache, no_network):
    model = weights.get("sam2.1-hiera-tiny")
    target = weights.cached_path(model)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\0" * 1000)
    with pytest.raises(ChecksumMismatch, match=r"sam2\.1_hiera_tiny\.pt is truncated: 1000 bytes, expected 156008466"):
        weights.resolve(model.name)
    with target.open("r+b") as handle:  # right size, wrong bytes (sparse file: no disk cost)
        handle.truncate(model.size)
    with pytest.raises(ChecksumMismatch, match=f"has SHA-256 .*expected {model.sha256}"):
        weights.resolve(model.name)
    assert no_network == []


# --------------------------------------------------------------------------- CLI

def test_cli_weights_download_list_verify_path(hub, cache, monkeypatch, capsys):
    model = _model(monkeypatch, payload=PAYLOAD)
    hub.files[(model.repo_id, model.filename)] = PAYLOAD
    assert main(["weights", "path", model.name]) == 0
    assert f"{cache / model.name / model.filename}\tmissing" in capsys.readouterr().out
    assert main(["weights", "download", model.name, "--quiet"]) == 0
    assert f"{model.name}: {cache / model.name / model.filename}" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"weights folder: {cache}" in listing
    row = next(line for line in listing.splitlines() if line.startswith(model.name))
    assert " ok " in row and "Apache-2.0" in row
    assert main(["weights", "verify", model.name]) == 0
    assert f"{model.name}: ok  sha256 {model.sha256}" in capsys.readouterr().out
    path = cache / model.name / model.filename
    path.write_bytes(PAYLOAD[:-1] + b"!")
    assert main(["weights", "verify", model.name]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_cli_weights_download_offline_fails_with_instructions(cache, monkeypatch, capsys, no_network):
    monkeypatch.setenv("SYNPO_OFFLINE", "1")
    assert main(["weights", "download", "dinov2-vitl14-reg4"]) == 1
    err = capsys.readouterr().err
    assert "model.safetensors is missing: offline mode" in err and "synpo weights download dinov2-vitl14-reg4" in err
    assert no_network == []


def _segment_args(tmp_path, *extra):
    t1, atlas = TEMPLATES / "ch2.nii.gz", TEMPLATES / "aal.nii.gz"
    assert t1.is_file() and atlas.is_file(), "real test data missing: apt-get install mricron-data"
    return ["segment", "--query", str(t1), "--support-mask", str(atlas), "--label", "77", "--support-slice", "72",
            "--range", "73:75", "--out", str(tmp_path / "out.seg.nrrd"), "--quiet", *extra]


def test_cli_segment_offline_with_empty_cache_fails_fast(cache, tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.setenv("SYNPO_OFFLINE", "1")
    start = time.perf_counter()
    code = main(_segment_args(tmp_path, "--backend", "synpo"))
    elapsed = time.perf_counter() - start
    assert code == 2 and elapsed < 5
    err = capsys.readouterr().err
    assert "sam2.1_hiera_large.pt is missing" in err
    assert f"expected at: {cache / 'sam2.1-hiera-large' / 'sam2.1_hiera_large.pt'}" in err
    assert "synpo weights download sam2.1-hiera-large" in err
    assert not (tmp_path / "out.seg.nrrd").exists()
    assert no_network == []


def test_cli_segment_runs_offline_with_the_files_in_place(cache, tmp_path, monkeypatch, capsys, no_network):
    """Real checkpoint files (random weights) in the cache, verified, used offline.

    The registry entries of SAM 2.1 tiny and DINOv2-S reg4 are pointed at the
    digests of these files; the models run at test size (SAM 2.1 at 256 px) through
    the same options the CLI builds.
    """
    import torch
    from safetensors.torch import save_file

    from SynPoLib.backends import sam2_dinov2
    from SynPoLib.backends.dinov2 import build_dinov2
    from SynPoLib.backends.sam2_image import build_sam2_model

    files = {"sam2.1-hiera-tiny": None, "dinov2-vits14-reg4": None}
    for name in files:
        model = weights.get(name)
        target = weights.cached_path(model)
        target.parent.mkdir(parents=True)
        if name.startswith("sam2"):
            torch.save({"model": build_sam2_model("tiny", seed=11).state_dict()}, target)
        else:
            net = build_dinov2("vits14-reg4", grid=37, seed=12)
            save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(target))
        digest = weights.sha256_file(target)
        monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(model, sha256=digest,
                                                                         size=target.stat().st_size))
    real_options = sam2_dinov2.options_from_args
    monkeypatch.setattr(sam2_dinov2, "options_from_args",
                        lambda args, log=None: dict(real_options(args, log), sam2_image_size=256))
    monkeypatch.setenv("SYNPO_OFFLINE", "1")
    args = _segment_args(tmp_path, "--backend", "synpo", "--sam2-size", "tiny", "--dino-model", "vits14-reg4",
                         "--device", "cpu")
    assert main(args) == 0
    captured = capsys.readouterr()
    assert (tmp_path / "out.seg.nrrd").is_file()
    assert "SAM 2.1 tiny + DINOv2 vits14-reg4" in captured.out
    assert "warning: running the synpo backend" in captured.err and "s per slice" in captured.err
    assert "--backend lite" in captured.err
    assert no_network == []

    # a cached file that no longer matches its digest is refused, naming it
    dino_file = weights.cached_path(weights.get("dinov2-vits14-reg4"))
    data = bytearray(dino_file.read_bytes())
    data[-5] ^= 0xFF
    dino_file.write_bytes(bytes(data))
    os.utime(dino_file, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    (tmp_path / "out.seg.nrrd").unlink()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{dino_file} has SHA-256" in err and "synpo weights download dinov2-vits14-reg4" in err
    assert not (tmp_path / "out.seg.nrrd").exists()


def _safetensors(n_values: int) -> bytes:
    import json

    header = json.dumps({"w": {"dtype": "F32", "shape": [n_values], "data_offsets": [0, 4 * n_values]}}).encode()
    return len(header).to_bytes(8, "little") + header + np.arange(n_values, dtype="<f4").tobytes()


def test_a_hand_placed_file_without_a_published_digest_is_never_called_verified(cache, capsys, no_network):
    """DINOv2's timm files publish no digest: a copy put in the cache by hand can only be
    checked by its structure. Intact: "unverified" (not "ok"); cut short: refused, never stamped."""
    model = weights.get("dinov2-vits14")
    target = weights.cached_path(model)
    target.parent.mkdir(parents=True)
    target.write_bytes(_safetensors(1000))
    assert main(["weights", "verify", model.name]) == 0
    out = capsys.readouterr().out
    assert f"{model.name}: unverified  sha256 " in out and "no published digest" in out and ": ok " not in out
    assert main(["weights", "verify", model.name]) == 0  # its own first stamp does not make it trusted
    assert "unverified" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(model.name))
    assert " unverified " in row and " ok " not in row
    # the same file cut short by a failed copy: refused on verify and on use, and no stamp is written
    stamp = target.with_name(target.name + weights.STAMP_SUFFIX)
    target.write_bytes(_safetensors(1000)[:-40])
    stamp.unlink()
    assert main(["weights", "verify", model.name]) == 1
    assert "BROKEN" in capsys.readouterr().out and not stamp.exists()
    with pytest.raises(weights.BrokenCheckpoint, match="truncated"):
        weights.resolve(model.name)
    assert no_network == []
