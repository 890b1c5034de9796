"""What a file-to-file run reads from its request: the range, the backend.

Each check raises :class:`~SynPoLib.errors.InputError` with one line that says what
to fix, before any work is done.
"""

from __future__ import annotations

from typing import Optional, Tuple

from ..errors import InputError, WeightsError

#: backends built on SAM 2.1 (their options and weights come from SynPoLib.backends.sam2_dinov2)
SAM2_BACKENDS = ("synpo", "sam2")


def parse_range(text: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int]]]:
    """'a:b' (half-open, like Python), 'a:' or ':b' -> (a, b) with None for open ends."""
    if text is None:
        return None
    if not isinstance(text, str) or text.count(":") != 1:
        raise InputError(f"--range must look like START:STOP (half-open, e.g. --range 10:20), got {text!r}")
    start, _, stop = text.partition(":")
    try:
        return (int(start) if start.strip() else None, int(stop) if stop.strip() else None)
    except ValueError:
        raise InputError(f"--range must hold whole numbers, e.g. --range 10:20; got {text!r}") from None


def backend_options(args) -> dict:
    """Options of the chosen backend, from the attributes ``synpo segment`` parses.

    For SAM 2.1 backends the weights are resolved here, first, so a missing file fails
    before any other work.
    """
    from ..backends import BACKENDS

    name = args.backend
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    if name in SAM2_BACKENDS:
        from ..backends.sam2_dinov2 import options_from_args

        try:
            return options_from_args(args)
        except WeightsError as exc:
            raise InputError(str(exc)) from None
    given = [flag for flag, attr in (("--sam2-size", "sam2_size"), ("--dino-model", "dino_model"),
                                     ("--sam2-checkpoint", "sam2_checkpoint"), ("--dino-checkpoint", "dino_checkpoint"))
             if getattr(args, attr, None)]
    if given:
        raise InputError(f"{', '.join(given)} apply to the synpo and sam2 backends, not {name}")
    device = getattr(args, "device", None)
    if device is None:
        return {}
    from ..backends.device import resolve_device

    return {"device": str(resolve_device(device))}  # "auto" and absent devices handled in one place


def open_backend(name: str, device: Optional[str] = None, options: Optional[dict] = None):
    """The backend ``name`` (built once per process); a weights problem is an input error."""
    from ..backends import BACKENDS, create_backend

    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    if options is None:
        options = {} if device is None else {"device": device}
    try:
        return create_backend(name, **options)
    except WeightsError as exc:
        raise InputError(str(exc)) from None


__all__ = ["SAM2_BACKENDS", "backend_options", "open_backend", "parse_range"]
