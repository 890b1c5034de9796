"""A SynPo run on MRML nodes: the model on a worker thread, scene writes on the caller's.

:func:`run_on_nodes` copies the inputs out of the scene once (:func:`read_inputs`, every
check a user's choice can fail), and a :class:`SegmentationRun` then works on those
copies, with a writer that owns every scene change (:class:`~.writer.SegmentWriter`).
The caller polls from the thread that owns the scene: a QTimer in Slicer, a loop in a
script.

Several segments in one run (every segment drawn on the labelled slice, or a choice):
one result segment each, the encoder pass of every slice shared
(:func:`SynPoLib.volume.segment_structures`). After the user corrected result slices
(Segment Editor), :func:`rerun_on_nodes` runs again with every corrected slice as one
more support, recomputes only the slices the corrections can change, rewrites the
result segments in place (:class:`~.writer.SegmentUpdater`) and is one undo step;
:func:`review_rows` is the review list, saying which slices the correction changed.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import Cancelled, InputError, MRMLInputError, RunInProgress
from .nodes import (contrasting_color, display_window, ijk_to_world, node_name, same_node, segment_array,
                    segment_color, volume_array)
from .slicing import Reorientation, labelled_slices, lps_placement, query_slices, spacing_kji
from .writer import SegmentUpdater, SegmentWriter


@dataclass
class SegmentInput:
    """One labelled segment of a run: its support and the query slices it covers."""

    segment_id: str
    name: str
    color: Tuple[float, float, float]
    support: Any  # SynPoLib.volume.Support
    slices: List[int]


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
    #: every segment of the run (one for a one-segment run); ``support`` and ``slices``
    #: above are the first one's, ``slices`` the union of all
    segments: Tuple[SegmentInput, ...] = ()
    #: the aligned query's physical placement (LPS origin, direction), as Support's
    query_origin: Optional[Tuple[float, float, float]] = None
    query_direction: Optional[Tuple[float, ...]] = None

    @property
    def axis(self) -> int:
        return self.support.axis

    @property
    def several(self) -> bool:
        return len(self.segments) > 1


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
    #: several segments: segment ID -> its records (``records`` holds the first one's)
    structures: Dict[str, List[Any]] = field(default_factory=dict)
    #: a run after corrections: segment ID -> slices the correction changed / the user corrected
    changed: Dict[str, List[int]] = field(default_factory=dict)
    corrected: Dict[str, List[int]] = field(default_factory=dict)


class SegmentationRun:
    """One SynPo run on MRML nodes: inference on the worker thread, scene writes here.

    Call :meth:`start` and then :meth:`poll` from the thread that owns the scene (a
    QTimer in Slicer, a loop in a script). ``poll`` applies the slices the worker
    finished (``stream=True``) and, at the end, writes the whole result and commits;
    a cancelled or failed run is rolled back to the state before :meth:`start`.
    States: new, running, finished, cancelled, failed.

    The writer (SynPoLib.mrml.SegmentWriter) has ``shape`` (the query's (k, j, i)),
    ``begin()``, ``write_slice(index, axis, mask)``, ``write_volume(mask)``, ``commit()``
    and ``rollback()``. A run of several segments has one writer per segment
    (``writers``: segment ID -> writer, in the inputs' order; ``writer`` is the first).
    """

    def __init__(self, backend: Any, inputs: NodeInputs, writer: Any, *, config=None,
                 batch_size: int = 1, stream: bool = True, writers: Optional[Dict[str, Any]] = None) -> None:
        """``backend`` is a Backend, or a no-argument callable that builds one: it is then
        called on the worker thread, so loading a model never blocks the caller."""
        writers = dict(writers) if writers else {"": writer}
        for w in writers.values():
            if tuple(inputs.native_shape) != tuple(w.shape):
                raise MRMLInputError(
                    f"the output is written on a grid of {w.shape[::-1]} voxels but the query has "
                    f"{inputs.native_shape[::-1]}: write with the query volume as reference")
        self.backend = backend
        self.inputs = inputs
        self.writers = writers
        self.writer = next(iter(writers.values())) if writer is None else writer
        #: segment ID (or "") -> records, and the (aligned) masks this run wrote
        self.structures: Dict[str, List[Any]] = {name: [] for name in writers}
        self.written: Dict[str, np.ndarray] = {}
        #: every slice corrected by the user so far, per segment ID (runs after corrections)
        self.corrected: Dict[str, List[int]] = {}
        self.changed: Dict[str, List[int]] = {}
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
    def _compute(self, backend: Any, progress: Callable, cancel: threading.Event) -> Any:
        """The result (a VolumeResult, or a StructuresResult for several segments)."""
        from ..volume import Structure, segment_structures, segment_volume

        inputs = self.inputs
        if not inputs.several:
            return segment_volume(
                backend, inputs.query, inputs.support, config=self.config, slices=inputs.slices,
                query_spacing=inputs.query_spacing, query_window=inputs.query_window,
                same_volume=inputs.same_volume, batch_size=self.batch_size, progress=progress, cancel=cancel,
                query_origin=inputs.query_origin, query_direction=inputs.query_direction)
        structures = [Structure(seg.segment_id, seg.support, label=n + 1, slices=seg.slices,
                                same_volume=inputs.same_volume) for n, seg in enumerate(inputs.segments)]
        return segment_structures(backend, inputs.query, structures, config=self.config,
                                  query_spacing=inputs.query_spacing, query_window=inputs.query_window,
                                  batch_size=self.batch_size, progress=progress, cancel=cancel,
                                  query_origin=inputs.query_origin, query_direction=inputs.query_direction)

    def _work(self) -> None:
        try:
            backend = self.backend
            if not hasattr(backend, "encode"):
                self._events.put(("stage", "loading the model"))
                backend = backend()
                self._events.put(("stage", f"segmenting with {backend.describe()}"))
            result = self._compute(backend, lambda event: self._events.put(("slice", event)), self._cancel)
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
            self._begin_writers()
            self._prepare()
        except BaseException:
            try:
                for w in reversed(list(self.writers.values())):
                    w.rollback()
            finally:
                self._release()
            raise
        self.state = "running"
        self._started_at = time.perf_counter()
        self._future = _WORKER.submit(self._work)
        return self

    def _prepare(self) -> None:
        """Called on the scene's thread once the writers have begun, before the worker starts."""

    def _begin_writers(self) -> None:
        begun = []
        try:
            for w in self.writers.values():
                if begun and w.segmentation_node is None and getattr(begun[0], "created_node", False):
                    w.segmentation_node = begun[0].segmentation_node  # one new node for the whole run
                w.begin()
                begun.append(w)
        except BaseException:
            for w in reversed(begun):
                w.rollback()
            raise

    def cancel(self) -> None:
        """Ask the worker to stop; the next :meth:`poll` rolls the scene back."""
        self._cancel.set()

    @property
    def finished(self) -> bool:
        return self.state in ("finished", "cancelled", "failed", "undone")

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
                for w in self.writers.values():
                    w.notify()
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
                         stage=self.stage, structures={k: list(v) for k, v in self.structures.items()},
                         changed={k: list(v) for k, v in self.changed.items()},
                         corrected={k: list(v) for k, v in self.corrected.items()})

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
            name = event.structure if event.structure in self.writers else next(iter(self.writers))
            self.structures[name].append(event.record)
            if name == next(iter(self.writers)):
                self.records.append(event.record)
            if self.stream and not self._cancel.is_set():
                axis, index, mask = self.inputs.reorientation.slice_to_native(
                    self.inputs.axis, event.record.index, event.mask, self.inputs.query.shape)
                self.writers[name].write_slice(index, axis, mask, notify=False)
                self._unshown = True
        elif kind == "finished":
            if self._cancel.is_set():  # cancelled after the last slice: still honour it
                self._rollback("cancelled")
                return
            self.result = payload
            results = getattr(payload, "results", None) or {next(iter(self.writers)): payload}
            for name, w in self.writers.items():
                self.structures[name] = list(results[name].records)
                self.written[name] = np.asarray(results[name].mask) > 0
                w.write_volume(self.inputs.reorientation.to_native(results[name].mask))
            self.records = list(self.structures[next(iter(self.writers))])
            self.changed = {name: list(v) for name, v in (getattr(payload, "changed", None) or {}).items()}
            for w in self.writers.values():
                w.commit()
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
            errors = []
            for w in reversed(list(self.writers.values())):
                try:
                    w.rollback()
                except BaseException as exc:  # take back every writer, report the first failure
                    errors.append(exc)
            if errors:
                raise errors[0]
        finally:
            self.state = state
            self._release()

    def undo(self) -> None:
        """Take a finished run's result back: one step for every segment it wrote."""
        if self.state != "finished":
            raise RuntimeError(f"nothing to undo: the run is {self.state}")
        for w in reversed(list(self.writers.values())):
            w.undo()
        self.state = "undone"

    def _release(self) -> None:
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)


def read_inputs(support_volume, segmentation_node, segment_id: Union[str, Sequence[str]], *, axis: int,
                support_slices: Optional[Sequence[int]] = None, query_volume=None,
                slice_range: str = "whole", margin: int = 10, first: int = 0, last: int = -1,
                use_display_window: bool = True) -> NodeInputs:
    """Copy support and query out of the scene, checking everything a user can get wrong.

    ``segment_id``: one segment, or several (a multi-structure run: each is segmented,
    sharing the encoder passes). ``support_slices`` None means every slice along ``axis``
    where a segment is drawn (k-shot when there are several); given, each segment uses
    those of them it is drawn on (at least one). The query defaults to the support volume.
    """
    from ..volume.types import Support, whole_number

    if axis not in (0, 1, 2):
        raise MRMLInputError(f"axis must be 0, 1 or 2 (k, j, i of the volume), got {axis}")
    ids = [segment_id] if isinstance(segment_id, str) else list(dict.fromkeys(segment_id))
    if not ids:
        raise MRMLInputError("choose at least one segment that holds a labelled support slice")
    support_vol = volume_array(support_volume, "support")
    s_matrix = ijk_to_world(support_volume)
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
    q_origin, q_direction = lps_placement(turn.aligned_matrix(q_matrix, native.shape))
    segments = []
    for sid in ids:
        mask = segment_array(segmentation_node, sid, support_volume)
        segment_name = segmentation_node.GetSegmentation().GetSegment(sid).GetName()
        drawn = labelled_slices(mask, axis)
        if not drawn:
            raise MRMLInputError(
                f"segment '{segment_name}' has no voxel inside '{node_name(support_volume)}': draw the structure "
                "on one slice of the support volume first")
        if support_slices is None:
            chosen = drawn
        else:
            try:
                asked = sorted(set(whole_number(s, "a support slice index") for s in support_slices))
            except InputError as exc:
                raise MRMLInputError(str(exc)) from None
            if not asked:
                raise MRMLInputError("give at least one support slice")
            n = support_vol.shape[axis]
            outside = [s for s in asked if not 0 <= s < n]
            if outside:
                raise MRMLInputError(f"support slice {outside[0]} is outside '{node_name(support_volume)}' "
                                     f"(0..{n - 1})")
            chosen = [s for s in asked if s in drawn] if len(ids) > 1 else asked
            empty = [s for s in asked if s not in drawn]
            if (len(ids) == 1 and empty) or not chosen:
                shown = ", ".join(str(s) for s in drawn[:8]) + (" ..." if len(drawn) > 8 else "")
                raise MRMLInputError(
                    f"segment '{segment_name}' is not drawn on slice {empty[0]} (axis {axis}); it is drawn on "
                    f"slices {shown}")
        support = Support(volume=support_vol, mask=mask, slices=chosen, axis=axis,
                          spacing=spacing_kji(s_matrix), window=s_window, origin=s_origin, direction=s_direction)
        slices = query_slices(slice_range, query.shape[axis], chosen, support_vol.shape[axis],
                              margin=margin, first=first, last=last)
        segments.append(SegmentInput(segment_id=sid, name=segment_name, color=segment_color(segmentation_node, sid),
                                     support=support, slices=slices))
    head = segments[0]
    union = sorted(set().union(*(set(seg.slices) for seg in segments)))
    return NodeInputs(query=query, query_spacing=turn.aligned_spacing(spacing_kji(q_matrix)),
                      native_shape=tuple(native.shape), reorientation=turn, support=head.support, slices=union,
                      same_volume=same, query_window=q_window, support_name=head.name, segments=tuple(segments),
                      query_origin=q_origin, query_direction=q_direction)


def run_on_nodes(backend: Any, support_volume, segmentation_node, segment_id: Union[str, Sequence[str]], *,
                 axis: int, support_slices: Optional[Sequence[int]] = None, query_volume=None,
                 output_segmentation=None, name: Optional[str] = None,
                 color: Optional[Sequence[float]] = None, config=None, slice_range: str = "whole",
                 margin: int = 10, first: int = 0, last: int = -1, use_display_window: bool = True,
                 batch_size: int = 1, stream: bool = True,
                 before_first_write: Optional[Callable[[Any], None]] = None) -> SegmentationRun:
    """Build (not start) a run from nodes: read and check inputs, prepare the writer(s).

    ``segment_id``: one segment or several (one result segment each, one run).
    ``output_segmentation`` None writes into a new segmentation node; a node (e.g. the
    support's own segmentation) gets new segments. Name and colour default to each
    support segment's name + " SynPo" and its colour (turned to a contrasting one when
    the result goes into the support's own segmentation); ``name`` and ``color`` apply
    to a one-segment run only.
    """
    inputs = read_inputs(support_volume, segmentation_node, segment_id, axis=axis,
                         support_slices=support_slices, query_volume=query_volume,
                         slice_range=slice_range, margin=margin, first=first, last=last,
                         use_display_window=use_display_window)
    reference = support_volume if query_volume is None else query_volume
    writers: Dict[str, Any] = {}
    target = output_segmentation
    for n, seg in enumerate(inputs.segments):
        seg_color = color if (color is not None and not inputs.several) else seg.color
        if not (color is not None and not inputs.several) and same_node(output_segmentation, segmentation_node):
            seg_color = contrasting_color(seg_color)
        seg_name = name if (name and not inputs.several) else f"{seg.name} SynPo"
        writer = SegmentWriter(reference, target, name=seg_name, color=seg_color,
                               before_first_write=before_first_write if n == 0 else None)
        writers[seg.segment_id if inputs.several else ""] = writer
    if inputs.several:
        return SegmentationRun(backend, inputs, None, config=config, batch_size=batch_size, stream=stream,
                               writers=writers)
    return SegmentationRun(backend, inputs, writers[""], config=config, batch_size=batch_size, stream=stream)


class CorrectionRun(SegmentationRun):
    """A run again after the user corrected slices of a finished run's result segments.

    Built by :func:`rerun_on_nodes`. When it starts, each result segment is read as the
    user left it; the slices that differ from what the last run wrote are this round's
    corrections (:mod:`SynPoLib.volume.corrections`). The segments are rewritten in
    place by :class:`~.writer.SegmentUpdater`s: cancel, failure and :meth:`undo` (one
    step for all of them) put them back as the user left them.
    """

    def __init__(self, backend: Any, previous: SegmentationRun, writers: Dict[str, SegmentUpdater], *,
                 config=None, batch_size: int = 1, stream: bool = True) -> None:
        super().__init__(backend, previous.inputs, None, config=config, batch_size=batch_size, stream=stream,
                         writers=writers)
        self.previous = previous
        self.corrections: List[Any] = []
        self._total = 0

    def _prepare(self) -> None:
        self.corrections = _corrections(self.previous, {name: w.before for name, w in self.writers.items()})
        if not any(c.corrected for c in self.corrections):
            raise MRMLInputError("no slice of the result was corrected since the last run: correct the slices "
                                 "that are wrong (Segment Editor), then run again")
        self.corrected = {c.name: sorted(set(c.corrected) | set(c.earlier)) for c in self.corrections}

    def _compute(self, backend: Any, progress: Callable, cancel: threading.Event) -> Any:
        from ..volume.corrections import rerun

        inputs = self.inputs
        return rerun(backend, inputs.query, self.corrections, config=self.config,
                     query_spacing=inputs.query_spacing, query_window=inputs.query_window,
                     batch_size=self.batch_size, progress=progress, cancel=cancel,
                     query_origin=inputs.query_origin, query_direction=inputs.query_direction)


def _corrections(previous: SegmentationRun, current_native: Dict[str, np.ndarray]) -> List[Any]:
    """Each result segment as the user left it, against what ``previous`` wrote."""
    from ..volume.corrections import Correction

    inputs = previous.inputs
    axis = inputs.axis
    segments = {(seg.segment_id if inputs.several else ""): seg for seg in inputs.segments}
    out = []
    for name in previous.writers:
        current = inputs.reorientation.to_aligned(np.asarray(current_native[name]) > 0)
        written = previous.written[name]
        other = tuple(a for a in range(3) if a != axis)
        differs = np.flatnonzero((current != written).any(axis=other))
        earlier = set(previous.corrected.get(name, ()))
        seg = segments[name]
        out.append(Correction(name=name, support=seg.support, current=current,
                              corrected=[int(q) for q in differs], earlier=sorted(earlier - set(differs.tolist())),
                              label=1, slices=seg.slices, same_volume=inputs.same_volume,
                              records=previous.structures.get(name, ())))
    return out


def corrected_slices(previous: SegmentationRun) -> Dict[str, List[int]]:
    """Segment ID ("" for a one-segment run) -> the result slices the user has changed since
    ``previous`` wrote them (run slice indices): what :func:`rerun_on_nodes` would use."""
    from .nodes import segment_array

    current = {name: segment_array(w.segmentation_node, w.segment_id, w.reference)
               for name, w in previous.writers.items()}
    return {c.name: list(c.corrected) for c in _corrections(previous, current)}


def rerun_on_nodes(backend: Any, previous: SegmentationRun, *, config=None, batch_size: Optional[int] = None,
                   stream: bool = True,
                   before_first_write: Optional[Callable[[Any], None]] = None) -> CorrectionRun:
    """Build (not start) a run again after the user corrected ``previous``'s result segments.

    ``previous`` must have finished (a first run, or an earlier run again). The result
    segments must still be in the scene; at least one of their slices must differ from
    what ``previous`` wrote. Configuration and batch size default to ``previous``'s.
    """
    if previous.state != "finished" or not previous.written:
        raise MRMLInputError("run again needs a finished SynPo result to start from")
    if not any(corrected_slices(previous).values()):
        raise MRMLInputError("no slice of the result was corrected since the last run: correct the slices that "
                             "are wrong (Segment Editor), then run again")
    writers = {}
    for n, (name, w) in enumerate(previous.writers.items()):
        writers[name] = SegmentUpdater(w.reference, w.segmentation_node, w.segment_id,
                                       before_first_write=before_first_write if n == 0 else None)
    return CorrectionRun(backend, previous, writers, config=previous.config if config is None else config,
                         batch_size=previous.batch_size if batch_size is None else batch_size, stream=stream)


@dataclass(frozen=True)
class ReviewRow:
    """One row of the review list: a slice of one result segment."""

    index: int
    #: the result segment's ID ("" in a one-segment run) and its name
    segment: str
    name: str
    score: str
    pixels: int
    #: why to look at it ("" when nothing to say)
    flag: str


#: review-list notes of a run again after corrections
CHANGED_BY_CORRECTION = "changed by the correction"
CORRECTED_BY_USER = "corrected by you"


def review_rows(status: RunStatus, quality=None, names: Optional[Dict[str, str]] = None) -> List[ReviewRow]:
    """The review list of a run: every slice of every result segment, in slice order.

    The flag says why to look at a slice (SynPoLib.volume.qc.review_flags); after a run
    again, also which slices the correction changed and which ones the user corrected.
    Several segments: each flag starts with the segment's name.
    """
    from ..volume.qc import review_flags

    structures = status.structures or {"": status.records}
    several = len(structures) > 1
    rows = []
    for name, records in structures.items():
        flags = review_flags(records, quality) if quality is not None else review_flags(records)
        changed = set(status.changed.get(name, ()))
        corrected = set(status.corrected.get(name, ()))
        label = (names or {}).get(name, name)
        for r in sorted(records, key=lambda r: r.index):
            parts = []
            if r.index in corrected:
                parts.append(CORRECTED_BY_USER)
            elif r.index in changed:
                parts.append(CHANGED_BY_CORRECTION)
            if r.index in flags and r.index not in corrected:
                parts.append(flags[r.index])
            flag = "; ".join(parts)
            if flag and several:
                flag = f"{label}: {flag}"
            score = "support" if r.support_index < 0 else (f"{r.score:.3f}" if r.score == r.score else "")
            if r.index in corrected:
                score = "corrected"
            rows.append(ReviewRow(index=int(r.index), segment=name, name=label, score=score, pixels=int(r.pixels),
                                  flag=flag))
    rows.sort(key=lambda row: row.index)
    return rows


__all__ = ["CHANGED_BY_CORRECTION", "CORRECTED_BY_USER", "CorrectionRun", "NodeInputs", "ReviewRow", "RunInProgress",
           "RunStatus", "SegmentInput", "SegmentationRun", "active_run", "corrected_slices", "read_inputs",
           "rerun_on_nodes", "review_rows", "run_on_nodes"]
