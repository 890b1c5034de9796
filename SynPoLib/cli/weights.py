"""``synpo weights list|download|verify|path``: the weights cache from the shell.

Typical offline install: on a machine with internet run ``synpo weights download``
(the default synpo set) and copy the printed folder; on the offline machine set
``SYNPO_WEIGHTS_DIR`` to the copy (or put the files where ``synpo weights path``
says) and run with ``SYNPO_OFFLINE=1``.
"""

from __future__ import annotations

import argparse
import sys

from ..backends import weights
from ..errors import InputError

HELP = "list, download, verify and locate model weights (SAM 2.1, DINOv2)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("list", "download", "verify", "path"),
                   help="list: every model and its state; download: fetch into the cache (default: the synpo "
                        "backend's set); verify: re-hash cached files; path: where a model's file must be")
    p.add_argument("models", nargs="*", metavar="MODEL", help="model names (see: synpo weights list)")
    p.add_argument("--all", action="store_true", help="download: every downloadable model")
    p.add_argument("--weights-dir", default=None, help="cache folder (default: $SYNPO_WEIGHTS_DIR or "
                                                       "~/.cache/synpo/weights)")
    p.add_argument("--force", action="store_true", help="download: fetch again even if present")
    p.add_argument("--offline", action="store_true", help="never touch the network (also: SYNPO_OFFLINE=1)")
    p.add_argument("--quiet", action="store_true", help="no download progress bar")


def _names(args: argparse.Namespace, default) -> list:
    names = list(args.models) or list(default)
    unknown = [n for n in names if n not in weights.REGISTRY]
    if unknown:
        raise InputError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(sorted(weights.REGISTRY))}")
    return names


def _list(args: argparse.Namespace) -> int:
    rows = weights.status(_names(args, sorted(weights.REGISTRY)), weights_dir_override=args.weights_dir)
    print(f"weights folder: {weights.weights_dir(args.weights_dir)}"
          + ("   (offline mode)" if weights.is_offline(True if args.offline else None) else ""))
    print(f"{'model':<22} {'size':>9}  {'state':<10} {'licence':<12} source")
    for row in rows:
        m = row.model
        source = m.repo_id or "manual: " + (m.url or "?")
        licence = m.licence if len(m.licence) <= 12 else m.licence[:11] + "…"
        print(f"{m.name:<22} {m.display_size:>9}  {row.state:<10} {licence:<12} {source}")
    print("states: ok = present and verified against a published digest; unverified = present, not yet hashed, "
          "or with no published digest (synpo weights verify checks its structure); missing = not in the folder")
    return 0


def _download(args: argparse.Namespace) -> int:
    if args.all:
        names = [n for n, m in sorted(weights.REGISTRY.items()) if m.repo_id is not None]
    else:
        names = _names(args, weights.DEFAULT_SET)
    offline = True if args.offline else None
    failed = 0
    for name in names:
        try:
            path = weights.download(name, weights_dir_override=args.weights_dir, offline=offline, force=args.force,
                                    progress=not args.quiet)
            print(f"{name}: {path}")
        except weights.WeightsError as exc:
            failed += 1
            print(f"synpo: error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def _verify(args: argparse.Namespace) -> int:
    names = _names(args, sorted(weights.REGISTRY))
    rows = weights.status(names, weights_dir_override=args.weights_dir, full=True)
    bad = 0
    for row in rows:
        if row.state == "missing":
            if args.models:  # asked for by name: its absence is a failure
                bad += 1
                print(f"{row.model.name}: MISSING at {row.path} (fetch: {weights.fetch_command(row.model)})")
            continue
        if row.state in ("mismatch", "broken"):
            bad += 1
            print(f"{row.model.name}: {row.state.upper()}: {row.detail}")
        elif row.state == "unverified":
            print(f"{row.model.name}: unverified  sha256 {row.detail}  {row.path}")
        else:
            print(f"{row.model.name}: ok  sha256 {row.detail}  {row.path}")
    if not any(r.present for r in rows) and not args.models:
        print(f"no weights in {weights.weights_dir(args.weights_dir)}")
    return 1 if bad else 0


def _path(args: argparse.Namespace) -> int:
    names = _names(args, weights.DEFAULT_SET)
    for name in names:
        model = weights.get(name)
        target = weights.cached_path(model, args.weights_dir)
        state = "present" if target.is_file() else "missing"
        print(f"{target}\t{state}")
        if state == "missing":
            where = model.download_url or model.url
            print(f"  # {model.filename} from {where}; or set {model.env_var}=/path/to/{model.filename}",
                  file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    return {"list": _list, "download": _download, "verify": _verify, "path": _path}[args.action](args)

