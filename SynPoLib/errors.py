"""SynPo's one family of errors: each says what went wrong and what to do, in one line.

Every error SynPo raises on purpose is a :class:`SynPoError`, so a caller (the command
line, the Slicer module, a batch script) can tell "SynPo refused this, for a reason it
states" from a bug. Each class also keeps the built-in base a caller would expect
(``ValueError`` for bad input, ``RuntimeError`` for a state of the machine), so code
written against those keeps working.
"""

from __future__ import annotations


class SynPoError(Exception):
    """Base of every error SynPo raises on purpose; the message is for the user."""


class InputError(SynPoError, ValueError):
    """Bad user input: the message says what to fix, in one line."""


class MRMLInputError(InputError):
    """A Slicer node or a choice in the module cannot be used as given."""


class ProtocolError(InputError):
    """An evaluation case cannot be built (e.g. the structure is absent or too thin)."""


class WeightsError(SynPoError, RuntimeError):
    """Model weights missing, unreadable, or not the expected file."""


class DeviceError(SynPoError, ValueError):
    """The requested device does not exist on this machine."""


class DeviceMemoryError(SynPoError, RuntimeError):
    """Even a single slice does not fit in the device's memory."""


class Cancelled(SynPoError, RuntimeError):
    """The run was cancelled; nothing was returned, so nothing the caller holds changed."""


class DownloadCancelled(Cancelled):
    """The user cancelled a weights download."""


class RunInProgress(SynPoError, RuntimeError):
    """Another SynPo run is writing into the scene; wait for it or cancel it."""


class Terminated(KeyboardInterrupt):
    """The process was asked to stop (SIGTERM) while SynPo held temporary files.

    A :class:`KeyboardInterrupt`, so that it passes every ``except Exception`` and
    is handled wherever Ctrl-C is: the run unwinds and removes what it staged.
    """


__all__ = ["Cancelled", "DeviceError", "DeviceMemoryError", "DownloadCancelled", "InputError", "MRMLInputError",
           "ProtocolError", "RunInProgress", "SynPoError", "Terminated", "WeightsError"]
