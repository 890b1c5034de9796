"""A SynPo run on MRML nodes: the model on a worker thread, scene writes on the caller's.

:func:`run_on_nodes` copies the inputs out of the scene once (:func:`read_inputs`, every
check a user's choice can fail), and a :class:`SegmentationRun` then works on those
copies, with a writer that owns every scene change (:class:`~.writer.SegmentWriter`).
The caller polls from the thread that owns the scene: a QTimer in Slicer, a loop in a
script.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from ..errors import Cancelled, MRMLInputError, RunInProgress
from .nodes import (contrasting_color, display_window, ijk_to_world, node_name, same_node, segment_array,
                    segment_color, volume_array)
from .slicing import Reorientation, labelled_slices, lps_placement, query_slices, spacing_kji
from .writer import SegmentWriter


@dataclass
class NodeInputs:
    """Everything a run needs, copied out of the scene on the main thread.

    ``query`` is turned to run along the support's axes (see :class:`Reorientation`);
    ``native_shape`` is the query volume's own (k, j, i) shape, where results go.
    """

    query: np.ndarray
    query_spacing: Tuple[float, float, float]
    native_shape: Tuple[int, int, int]
    reorientation: Reorientation
    support: Any  # SynPoLib.volume.Support (imported lazily: it needs torch)
    slices: List[int]
    same_volume: bool
    query_window: Optional[Tuple[float, float]]
    support_name: str
    #: the aligned query's physical placement (LPS origin, direction), as Support's
    query_origin: Optional[Tuple[float, float, float]] = None
    query_direction: Optional[Tuple[float, ...]] = None

    @property
    def axis(self) -> int:
        return self.support.axis


#: one persistent worker thread for every model call: cuDNN and autotuner caches are
#: per thread, so reusing one thread keeps later runs fast; it also serialises runs  [G]
_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="SynPo-worker")
_ACTIVE_LOCK = threading.Lock()
_ACTIVE: List["SegmentationRun"] = []


def active_run() -> Optional["SegmentationRun"]:
    """The run in progress in this process, if any."""
    with _ACTIVE_LOCK:
        return _ACTIVE[0] if _ACTIVE else None


@dataclass
class RunStatus:
    """What a poll saw: for progress bars and score lists."""

    state: str
    done: int = 0
    total: int = 0
    elapsed: float = 0.0
    remaining: float = float("nan")
    records: List[Any] = field(default_factory=list)
    error: Optional[BaseException] = None
    #: what the worker is doing before the first slice ("loading the model", ...)
    stage: str = ""


class SegmentationRun:
    """One SynPo run on MRML nodes: inference on the worker thread, scene writes here.

    Call :meth:`start` and then :meth:`poll` from the thread that owns the scene (a
    QTimer in Slicer, a loop in a script). ``poll`` applies the slices the worker
    finished (``stream=True``) and, at the end, writes the whole result and commits;
    a cancelled or failed run is rolled back to the state before :meth:`start`.
    States: new, running, finished, cancelled, failed.

    The writer (SynPoLib.mrml.SegmentWriter) has ``shape`` (the query's (k, j, i)),
    ``begin()``, ``write_slice(index, axis, mask)``, ``write_volume(mask)``, ``commit()``
    and ``rollback()``.
    """

    def __init__(self, backend: Any, inputs: NodeInputs, writer: Any, *, config=None,
                 batch_size: int = 1, stream: bool = True) -> None:
        """``backend`` is a Backend, or a no-argument callable that builds one: it is then
        called on the worker thread, so loading a model never blocks the caller."""
        if tuple(inputs.native_shape) != tuple(writer.shape):
            raise MRMLInputError(
                f"the output is written on a grid of {writer.shape[::-1]} voxels but the query has "
                f"{inputs.native_shape[::-1]}: write with the query volume as reference")
        self.backend = backend
        self.inputs = inputs
        self.writer = writer
        self.config = config
        self.batch_size = int(batch_size)
        self.stream = bool(stream)
        self.state = "new"
        self.records: List[Any] = []
        self.result = None
        self.error: Optional[BaseException] = None
        self._events: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._cancel = threading.Event()
        self._future = None
        self._started_at = 0.0
        self._done = 0
        self._total = len(inputs.slices)
        self._remaining = float("nan")
        self._unshown = False
        self.stage = ""

    # -- worker side
    def _work(self) -> None:
        from ..volume import segment_volume

        try:
            backend = self.backend
            if not hasattr(backend, "encode"):
                self._events.put(("stage", "loading the model"))
                backend = backend()
                self._events.put(("stage", f"segmenting with {backend.describe()}"))
            result = segment_volume(
                backend, self.inputs.query, self.inputs.support, config=self.config,
                slices=self.inputs.slices, query_spacing=self.inputs.query_spacing,
                query_window=self.inputs.query_window, same_volume=self.inputs.same_volume,
                batch_size=self.batch_size, progress=lambda event: self._events.put(("slice", event)),
                cancel=self._cancel, query_origin=self.inputs.query_origin,
                query_direction=self.inputs.query_direction)
        except Cancelled:
            self._events.put(("cancelled", None))
        except BaseException as exc:  # reported to the main thread, never lost in the worker
            self._events.put(("failed", exc))
        else:
            self._events.put(("finished", result))

    # -- main-thread side
    def start(self) -> "SegmentationRun":
        with _ACTIVE_LOCK:
            if _ACTIVE:
                raise RunInProgress("a SynPo run is already in progress: wait for it or cancel it first")
            _ACTIVE.append(self)
        try:
            self.writer.begin()
        except BaseException:
            self._release()
            raise
        self.state = "running"
        self._started_at = time.perf_counter()
        self._future = _WORKER.submit(self._work)
        return self

    def cancel(self) -> None:
        """Ask the worker to stop; the next :meth:`poll` rolls the scene back."""
        self._cancel.set()

    @property
    def finished(self) -> bool:
        return self.state in ("finished", "cancelled", "failed")

    def poll(self, max_events: int = 64) -> RunStatus:
        """Apply what the worker produced so far (call on the scene's thread).

        Streamed slices are written as they come and shown with one display update per
        poll, so a fast model cannot flood Slicer with surface rebuilds.
        """
        handled = 0
        while not self.finished and handled < max_events:
            try:
                kind, payload = self._events.get_nowait()
            except queue.Empty:
                break
            handled += 1
            try:
                self._apply(kind, payload)
            except BaseException as exc:  # a write failed (e.g. the segment was deleted): stop cleanly
                self._cancel.set()
                self._fail(exc)
        if self._unshown and self.state == "running":
            self._unshown = False
            try:
                self.writer.notify()
            except BaseException as exc:
                self._cancel.set()
                self._fail(exc)
        return self.status()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05,
             on_status: Optional[Callable[[RunStatus], None]] = None) -> RunStatus:
        """Poll until the run ends (for scripts; the GUI polls from a timer instead)."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not self.finished:
            status = self.poll()
            if on_status is not None:
                on_status(status)
            if deadline is not None and time.perf_counter() > deadline:
                self.cancel()
                deadline = None
            time.sleep(interval)
        return self.status()

    def status(self) -> RunStatus:
        elapsed = (time.perf_counter() - self._started_at) if self._started_at else 0.0
        return RunStatus(state=self.state, done=self._done, total=self._total, elapsed=elapsed,
                         remaining=self._remaining, records=list(self.records), error=self.error,
                         stage=self.stage)

    def native_slice(self, index: int) -> Tuple[int, int]:
        """(axis, index) in the query volume's own array of a run slice index."""
        axis, native, _ = self.inputs.reorientation.slice_to_native(
            self.inputs.axis, index, np.zeros((1, 1)), self.inputs.query.shape)
        return axis, native

    def _apply(self, kind: str, payload: Any) -> None:
        if kind == "stage":
            self.stage = str(payload)
        elif kind == "slice":
            event = payload
            self._done, self._total = event.done, event.total
            self._remaining = event.remaining_seconds
            self.records.append(event.record)
            if self.stream and not self._cancel.is_set():
                axis, index, mask = self.inputs.reorientation.slice_to_native(
                    self.inputs.axis, event.record.index, event.mask, self.inputs.query.shape)
                self.writer.write_slice(index, axis, mask, notify=False)
                self._unshown = True
        elif kind == "finished":
            if self._cancel.is_set():  # cancelled after the last slice: still honour it
                self._rollback("cancelled")
                return
            self.result = payload
            self.records = list(payload.records)
            self.writer.write_volume(self.inputs.reorientation.to_native(payload.mask))
            self.writer.commit()
            self.state = "finished"
            self._remaining = 0.0
            self._release()
        elif kind == "cancelled":
            self._rollback("cancelled")
        elif kind == "failed":
            self._fail(payload)

    def _fail(self, exc: BaseException) -> None:
        self.error = exc
        self._rollback("failed")

    def _rollback(self, state: str) -> None:
        try:
            self.writer.rollback()
        finally:
            self.state = state
            self._release()

    def _release(self) -> None:
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)


def read_inputs(support_volume, segmentation_node, segment_id: str, *, axis: int,
                support_slices: Optional[Sequence[int]] = None, query_volume=None,
                slice_range: str = "whole", margin: int = 10, first: int = 0, last: int = -1,
                use_display_window: bool = True) -> NodeInputs:
    """Copy support and query out of the scene, checking everything a user can get wrong.

    ``support_slices`` None means every slice along ``axis`` where the segment is drawn
    (k-shot when there are several). The query defaults to the support volume.
    """
    from ..volume.types import Support

    if axis not in (0, 1, 2):
        raise MRMLInputError(f"axis must be 0, 1 or 2 (k, j, i of the volume), got {axis}")
    support_vol = volume_array(support_volume, "support")
    s_matrix = ijk_to_world(support_volume)
    mask = segment_array(segmentation_node, segment_id, support_volume)
    segment_name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
    drawn = labelled_slices(mask, axis)
    if not drawn:
        raise MRMLInputError(
            f"segment '{segment_name}' has no voxel inside '{node_name(support_volume)}': draw the structure on "
            "one slice of the support volume first")
    if support_slices is None:
        chosen = drawn
    else:
        chosen = sorted(set(int(s) for s in support_slices))
        n = support_vol.shape[axis]
        outside = [s for s in chosen if not 0 <= s < n]
        if outside:
            raise MRMLInputError(f"support slice {outside[0]} is outside '{node_name(support_volume)}' (0..{n - 1})")
        empty = [s for s in chosen if s not in drawn]
        if empty:
            shown = ", ".join(str(s) for s in drawn[:8]) + (" ..." if len(drawn) > 8 else "")
            raise MRMLInputError(
                f"segment '{segment_name}' is not drawn on slice {empty[0]} (axis {axis}); it is drawn on "
                f"slices {shown}")
        if not chosen:
            raise MRMLInputError("give at least one support slice")
    same = query_volume is None or same_node(query_volume, support_volume)
    if same:
        native, q_matrix, turn = support_vol, s_matrix, Reorientation()
    else:
        native, q_matrix = volume_array(query_volume, "query"), ijk_to_world(query_volume)
        turn = Reorientation.between(q_matrix, s_matrix, axis)
    query = turn.to_aligned(native)
    s_window = display_window(support_volume) if use_display_window else None
    q_window = s_window if same else (display_window(query_volume) if use_display_window else None)
    s_origin, s_direction = lps_placement(s_matrix)
    support = Support(volume=support_vol, mask=mask, slices=chosen, axis=axis,
                      spacing=spacing_kji(s_matrix), window=s_window, origin=s_origin, direction=s_direction)
    slices = query_slices(slice_range, query.shape[axis], chosen, support_vol.shape[axis],
                          margin=margin, first=first, last=last)
    q_origin, q_direction = lps_placement(turn.aligned_matrix(q_matrix, native.shape))
    return NodeInputs(query=query, query_spacing=turn.aligned_spacing(spacing_kji(q_matrix)),
                      native_shape=tuple(native.shape), reorientation=turn, support=support, slices=slices,
                      same_volume=same, query_window=q_window, support_name=segment_name,
                      query_origin=q_origin, query_direction=q_direction)


def run_on_nodes(backend: Any, support_volume, segmentation_node, segment_id: str, *, axis: int,
                 support_slices: Optional[Sequence[int]] = None, query_volume=None,
                 output_segmentation=None, name: Optional[str] = None,
                 color: Optional[Sequence[float]] = None, config=None, slice_range: str = "whole",
                 margin: int = 10, first: int = 0, last: int = -1, use_display_window: bool = True,
                 batch_size: int = 1, stream: bool = True,
                 before_first_write: Optional[Callable[[Any], None]] = None) -> SegmentationRun:
    """Build (not start) a run from nodes: read and check inputs, prepare the writer.

    ``output_segmentation`` None writes into a new segmentation node; a node (e.g. the
    support's own segmentation) gets a new segment. Name and colour default to the
    support segment's name + " SynPo" and its colour (turned to a contrasting one when
    the result goes into the support's own segmentation).
    """
    inputs = read_inputs(support_volume, segmentation_node, segment_id, axis=axis,
                         support_slices=support_slices, query_volume=query_volume,
                         slice_range=slice_range, margin=margin, first=first, last=last,
                         use_display_window=use_display_window)
    if color is None:
        color = segment_color(segmentation_node, segment_id)
        if same_node(output_segmentation, segmentation_node):
            color = contrasting_color(color)
    writer = SegmentWriter(support_volume if query_volume is None else query_volume, output_segmentation,
                           name=name or f"{inputs.support_name} SynPo", color=color,
                           before_first_write=before_first_write)
    return SegmentationRun(backend, inputs, writer, config=config, batch_size=batch_size, stream=stream)


__all__ = ["NodeInputs", "RunInProgress", "RunStatus", "SegmentationRun", "active_run", "read_inputs", "run_on_nodes"]
