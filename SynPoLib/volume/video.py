"""Video mode: the volume as a video for SAM 2.1's video predictor.

The query slices along the support's axis are the frames of a video, in slice order.
Each labelled support slice is a frame carrying a mask prompt (``add_new_mask``): in
the same volume it is the slice itself; for another volume it is inserted at its
relative position along the axis. From each support frame sam2's
``propagate_in_video`` tracks the structure backwards (``reverse=True``) and forwards,
over the query slices nearer to that support than to any other, or the ones a given
assignment gives it (:func:`plan_video`), so every query slice is tracked exactly once.

Augmentative prompting and dynamic matching (the SAM 2 video FSMIS work: "volumes as
video", with the support augmented and the copy most like each frame chosen): every support slice is
augmented (:mod:`SynPoLib.augment`); each copy with its mask goes through
``add_new_mask`` once and its encoded memory is kept in a bank. Before a query frame
is tracked, the bank entry whose features are closest to that frame's becomes the
support frame's conditioning memory, so SAM 2 attends to the copy that looks most like
the frame it is segmenting.

Hybrid mode (``hybrid=True``): after SAM 2 tracks a frame, SynPo's point prompts
(confidence map -> PSM points, exactly as the per-slice mode picks them) are added to
that frame with ``add_new_points_or_box``: a correction on a tracked frame, decoded
with the frame's memory-conditioned features and its tracked mask, and encoded into
the memory the next frames read. Points are added only where SAM 2's object head
sees the structure, so SynPo's positives never force a mask past the structure's end.

Memory does not grow with the volume: frames are made and encoded one batch at a time
(sam2's frame tensor is never built), the encoder output goes straight into sam2's
one-frame feature cache, and tracking outputs older than what SAM 2 reads (its 7
mask memories, 16 object pointers) are dropped as the propagation moves on.

Each direction starts from the support alone: tracking outputs are cleared between
passes, so a backward pass never reads the forward pass's frames as its "past" (sam2's
notebooks run both directions in one state, which lets the second direction attend to
frames on the other side of the support).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Deque, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..backends.base import SAM, Backend, EncodedSlice
from ..config import SynPoConfig
from ..method.points import PointPrompts
from ..method.refine import mask_score
from ..method.segmenter import SupportContext, SynPoSegmenter
from ..method.synergy import QuerySynergy
from ..presets import preset
from .augment import AugmentConfig, Jitter, augment_support, best_match, descriptor
from .qc import relative_confidence
from .sink import NOT_SEGMENTED, Direction, ResultSink
from .types import CancelCheck, Job, ProgressCallback, SliceRecord, SliceSelection, Support, VolumeResult, \
    assign_supports


@dataclass(frozen=True)
class VideoConfig:
    """How the video predictor is run (the method's numbers are in SynPoConfig / AugmentConfig)."""

    #: tracking outputs kept behind the current frame; None: exactly as many as SAM 2
    #: reads (results identical to keeping all), a larger number changes nothing     [G]
    memory_window: Optional[int] = None
    #: sam2's option: keep tracking outputs in CPU memory instead of the GPU's   [sam2 default]
    offload_state_to_cpu: bool = False
    #: hybrid mode adds SynPo's points only where SAM 2's object-presence logit is
    #: above this; 0 is SAM 2's own threshold (below it, its mask is empty)       [G]
    hybrid_min_object_logit: float = 0.0
    #: query frames encoded ahead in one backend batch                             [G]
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.memory_window is not None and self.memory_window < 1:
            raise ValueError("memory_window must be >= 1 (or None for what SAM 2 reads)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")


@dataclass
class VideoSliceRecord(SliceRecord):
    """A :class:`SliceRecord` with what the video predictor said about the slice."""

    #: SAM 2's object-presence probability (sigmoid of its object-score logit)
    object_score: float = float("nan")
    #: bank entry matched to this frame: 0 = the support slice itself, k = its k-th copy
    augmentation: int = -1
    #: "backward" (towards index 0) or "forward"; "" for a copied support slice
    direction: str = ""

    def to_dict(self) -> dict:
        out = super().to_dict()
        out.update(object_score=self.object_score, augmentation=self.augmentation, direction=self.direction)
        return out


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Frame:
    """One video frame: a query slice, a support slice, or (same volume) both."""

    #: query slice index, None for a support slice inserted from another volume
    query: Optional[int]
    #: support slice index when the frame carries a support's mask prompt
    support: Optional[int] = None


@dataclass(frozen=True)
class Pass:
    """One ``propagate_in_video`` call: from a support frame, one direction."""

    support: int
    reverse: bool
    #: frame indices in the order sam2 visits them; the first is the support's frame
    frames: Tuple[int, ...]

    @property
    def direction(self) -> str:
        return "backward" if self.reverse else "forward"


@dataclass(frozen=True)
class VideoLayout:
    frames: Tuple[Frame, ...]
    #: support slice -> its frame index
    support_frame: Dict[int, int]
    passes: Tuple[Pass, ...]

    def frame_of_query(self, index: int) -> int:
        for i, f in enumerate(self.frames):
            if f.query == index and f.support is None:
                return i
        raise KeyError(index)


def plan_video(wanted: Sequence[int], support_slices: Sequence[int], n_query: int, n_support: int,
               same_volume: bool, assignment: Optional[Mapping[int, int]] = None) -> VideoLayout:
    """Frames and propagation passes for the query slices ``wanted``.

    The video covers the contiguous query slices from the first to the last of the
    wanted slices and the supports' positions (propagation has to pass through the
    slices between; they are tracked but not returned). Every covered query slice is
    served by the support ``assignment`` gives it, else by its nearest support
    (:func:`SynPoLib.volume.assign_supports`), and visited in exactly one pass: the
    slices of one support must lie on a run of frames through its own.
    """
    supports = sorted(set(int(s) for s in support_slices))
    scale = max(n_query - 1, 1) / max(n_support - 1, 1)
    anchor = {s: (float(s) if same_volume else s * scale) for s in supports}
    lo = min(min(wanted), min(math.ceil(a) for a in anchor.values()))
    hi = max(max(wanted), max(math.floor(a) for a in anchor.values()))
    lo, hi = max(lo, 0), min(hi, n_query - 1)
    frames: List[Frame] = []
    pending = [] if same_volume else list(supports)  # supports to insert, by position
    for q in range(lo, hi + 1):
        if same_volume:
            frames.append(Frame(query=q, support=q if q in anchor else None))
            continue
        while pending and anchor[pending[0]] <= q:
            frames.append(Frame(query=None, support=pending.pop(0)))
        frames.append(Frame(query=q))
    frames.extend(Frame(query=None, support=s) for s in pending)
    support_frame = {f.support: i for i, f in enumerate(frames) if f.support is not None}

    queries = [f.query for f in frames if f.query is not None and f.support is None]
    assigned = assign_supports(queries, supports, n_query, n_support)
    if assignment:
        assigned.update({int(q): int(s) for q, s in assignment.items() if int(q) in assigned})
    frame_support = {i: assigned[f.query] for i, f in enumerate(frames) if f.query is not None and f.support is None}
    passes: List[Pass] = []
    for s in supports:
        start = support_frame[s]
        for reverse in (True, False):
            step = -1 if reverse else 1
            order = [start]
            i = start + step
            while 0 <= i < len(frames) and frame_support.get(i) == s:
                order.append(i)
                i += step
            if len(order) > 1:
                passes.append(Pass(support=s, reverse=reverse, frames=tuple(order)))
    visited = sorted(i for p in passes for i in p.frames[1:])
    if visited != sorted(frame_support):
        lost = sorted(frames[i].query for i in set(frame_support) - set(visited))
        raise ValueError(f"video mode tracks outward from each support, but query slices {lost[:5]} are "
                         "assigned to a support they are not contiguous with")
    return VideoLayout(frames=tuple(frames), support_frame=support_frame, passes=tuple(passes))


# ---------------------------------------------------------------------------- bank
@dataclass
class BankEntry:
    """One (augmented) support copy: its encoded memory and its matching descriptor."""

    output: dict
    descriptor: np.ndarray
    jitter: Jitter


class _Discard:
    """A stream that drops what is written (sam2's tqdm bar of each pass)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def memory_reach(predictor) -> int:
    """How many frames back SAM 2 reads tracking outputs: mask memories and object pointers.

    Mask memories: the previous frame, then ``num_maskmem - 2`` more every
    ``memory_temporal_stride_for_eval`` frames (``SAM2Base._prepare_memory_conditioned_features``);
    object pointers: up to ``max_obj_ptrs_in_encoder - 1`` frames back.
    """
    stride = int(predictor.memory_temporal_stride_for_eval)
    reach = 1 + max(int(predictor.num_maskmem) - 2, 0) * stride
    if predictor.use_obj_ptrs_in_encoder:
        reach = max(reach, int(predictor.max_obj_ptrs_in_encoder) - 1)
    return reach


def tracking_state_bytes(state: dict) -> int:
    """Bytes of the tensors SAM 2 holds in an inference state, its frames excluded.

    Distinct storages only, so views and shared tensors count once: the figure that
    shows whether tracking memory stays bounded (``memory_reach``) on a long volume.
    """
    import torch

    seen = set()

    def count(obj) -> int:
        if isinstance(obj, torch.Tensor):
            key = (obj.untyped_storage().data_ptr(), obj.device)
            if key in seen:
                return 0
            seen.add(key)
            return obj.untyped_storage().nbytes()
        if isinstance(obj, dict):
            return sum(count(v) for v in obj.values())
        if isinstance(obj, (list, tuple)):
            return sum(count(v) for v in obj)
        return 0

    return count({k: v for k, v in state.items() if k != "images"})


def _sam2_backend(backend: Union[Backend, str]) -> Backend:
    if isinstance(backend, str):
        from ..backends import create_backend

        backend = create_backend(backend)
    return getattr(backend, "inner", backend)  # a CachedBackend serves its inner model


def _augment_config(augment: Union[AugmentConfig, int, None]) -> AugmentConfig:
    if augment is None or augment is False:
        return AugmentConfig(n=0)
    if isinstance(augment, bool):
        return AugmentConfig()
    if isinstance(augment, int):
        return AugmentConfig(n=augment)
    if isinstance(augment, AugmentConfig):
        return augment
    raise TypeError(f"augment must be an AugmentConfig, a number of copies or None, got {augment!r}")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


# ---------------------------------------------------------------------------- run
@dataclass(frozen=True)
class VideoOptions:
    """What a video-mode run adds to the job: augmentation, hybrid points, sam2's knobs."""

    augment: AugmentConfig = AugmentConfig()
    video: VideoConfig = VideoConfig()
    hybrid: bool = False
    #: called after each tracked slice; True ends that direction (see segment_volume_video)
    end_direction: Optional[Callable[[SliceRecord], bool]] = None


class _VideoRun:
    """One video-mode run into a :class:`ResultSink`; :func:`run` is its face."""

    def __init__(self, job: Job, sink: ResultSink, options: VideoOptions) -> None:
        from ..backends.sam2_video import LazyFrames, video_predictor

        self.job, self.sink, self.options = job, sink, options
        self.backend, self.config = job.backend, job.config
        self.augment, self.video = options.augment, options.video
        self.predictor = video_predictor(job.backend)
        self.segmenter = SynPoSegmenter(job.backend, job.config)
        self.roi = job.config.geometry.roi_size
        self.valid = job.q_geometry.valid()
        self.layout = plan_video(job.wanted, job.support.slices, job.query.shape[job.axis],
                                 job.support.volume.shape[job.axis], job.same, job.assignment)
        self.window = self.video.memory_window or memory_reach(self.predictor)
        self.frames = LazyFrames(len(self.layout.frames), self._frame_tensor)
        self.contexts: Dict[int, SupportContext] = {}
        self.bank: Dict[int, List[BankEntry]] = {}

    def _frame_tensor(self, i: int):
        """Frame ``i`` as sam2's loader makes it (only read if features were not handed over)."""
        import torch

        frame = self.layout.frames[i]
        roi = self.job.query_roi(frame.query) if frame.support is None else self.job.support_roi(frame.support)[0]
        x = torch.from_numpy(np.ascontiguousarray(roi)).permute(2, 0, 1)[None].float().div_(255.0)
        return self.backend.sam.transforms(x)[0]

    # -- state
    @property
    def _outputs(self) -> dict:
        return self.state["output_dict_per_obj"][0]

    def _cond_outputs(self) -> dict:
        return self._outputs["cond_frame_outputs"]

    def _build_bank(self) -> None:
        from ..backends.sam2_video import OBJECT_ID, backbone_out

        predictor, state = self.predictor, self.state
        for s in sorted(set(self.job.support.slices)):
            image, mask_roi = self.job.support_roi(s)
            copies = augment_support(image, mask_roi, self.job.s_geometry.scaled, self.augment, key=s)
            encoded = self.backend.encode([c.image for c in copies])
            self.contexts[s] = self.segmenter.prepare_support(encoded[0], mask_roi, self.job.s_geometry.valid())
            frame = self.layout.support_frame[s]
            entries = []
            for copy, enc in zip(copies, encoded):
                predictor.use_features(state, frame, backbone_out(predictor, enc))
                predictor.add_new_mask(state, frame, OBJECT_ID, copy.mask)
                # encode its memory now, while its features are the cached ones
                predictor.propagate_in_video_preflight(state)
                entries.append(BankEntry(output=self._cond_outputs().pop(frame),
                                         descriptor=descriptor(enc.features[SAM], self.augment.match_grid),
                                         jitter=copy.jitter))
            state["mask_inputs_per_obj"][0].pop(frame, None)
            self.bank[s] = entries

    def _install(self, choice: Dict[int, int]) -> None:
        cond = self._cond_outputs()
        for s, j in choice.items():
            cond[self.layout.support_frame[s]] = self.bank[s][j].output

    def _match(self, encoded: EncodedSlice) -> Dict[int, int]:
        if self.augment.n == 0:
            return {s: 0 for s in self.bank}
        query = descriptor(encoded.features[SAM], self.augment.match_grid)
        return {s: best_match(query, [e.descriptor for e in entries])[0] for s, entries in self.bank.items()}

    def _reset_tracking(self) -> None:
        self._outputs["non_cond_frame_outputs"].clear()
        self.state["frames_tracked_per_obj"][0].clear()
        self.state["point_inputs_per_obj"][0].clear()
        self.state["temp_output_dict_per_obj"][0]["non_cond_frame_outputs"].clear()

    def _forget(self, recent: Deque[int]) -> None:
        """Drop tracking outputs of frames further back than SAM 2 reads."""
        while len(recent) > self.window:
            old = recent.popleft()
            self._outputs["non_cond_frame_outputs"].pop(old, None)
            self.state["frames_tracked_per_obj"][0].pop(old, None)
            self.state["point_inputs_per_obj"][0].pop(old, None)

    def _hybrid_points(self, maps: QuerySynergy, context: SupportContext) -> PointPrompts:
        """SynPo's prompt points on a frame, picked as SynPoSegmenter.segment picks them."""
        return self.segmenter.prompt_points(maps, context, self.valid)[0]

    # -- the run
    def run(self) -> None:
        import torch

        from ..backends.device import autocast

        predictor = self.predictor
        device = torch.device(self.backend.device)
        with predictor.run_lock, autocast(device, getattr(self.backend, "dtype", None)):
            self.state = predictor.init_state_from_frames(self.frames, (self.roi, self.roi),
                                                          offload_state_to_cpu=self.video.offload_state_to_cpu)
            self._build_bank()
            try:
                for p in self.layout.passes:
                    self._run_pass(p)
            finally:
                self.state = None  # frees every tracking output at once

    def _encode_ahead(self, frames: Sequence[int]) -> Dict[int, Tuple[EncodedSlice, float]]:
        t = time.perf_counter()
        encoded = self.backend.encode([self.job.query_roi(self.layout.frames[f].query) for f in frames])
        share = (time.perf_counter() - t) / len(frames)
        return {f: (enc, share) for f, enc in zip(frames, encoded)}

    def _direction(self, p: Pass) -> Direction:
        indices = [self.layout.frames[f].query for f in p.frames[1:]]

        def make_record(index: int) -> VideoSliceRecord:
            return VideoSliceRecord(index=index, support_index=p.support, direction=p.direction)

        return self.sink.direction(p.support, indices, make_record)

    def _run_pass(self, p: Pass) -> None:
        import torch

        from ..backends.sam2_video import OBJECT_ID, backbone_out

        predictor, state = self.predictor, self.state
        self._reset_tracking()
        self._install({s: 0 for s in self.bank})
        generator = predictor.propagate_in_video(state, start_frame_idx=p.frames[0],
                                                 max_frame_num_to_track=len(p.frames) - 1, reverse=p.reverse)
        recent: Deque[int] = deque()
        ahead: Dict[int, Tuple[EncodedSlice, float]] = {}
        context = self.contexts[p.support]
        direction = self._direction(p)
        ended = ""
        try:
            with contextlib.redirect_stderr(_Discard()):  # sam2's tqdm binds its stream here
                first = next(generator)
            if first[0] != p.frames[0]:  # pragma: no cover - sam2 API drift
                raise RuntimeError(f"sam2 started at frame {first[0]}, not the support's frame {p.frames[0]}")
            todo = list(p.frames[1:])
            for k, f in enumerate(todo):
                if direction.stopped or ended:
                    break
                self.sink.check_cancel()
                if f not in ahead:
                    ahead.update(self._encode_ahead(todo[k:k + self.video.batch_size]))
                encoded, encode_time = ahead.pop(f)
                predictor.use_features(state, f, backbone_out(predictor, encoded))
                choice = self._match(encoded)
                self._install(choice)
                t = time.perf_counter()
                frame_idx, _, masks = next(generator)
                decode_time = time.perf_counter() - t
                if frame_idx != f:  # pragma: no cover - sam2 API drift
                    raise RuntimeError(f"sam2 tracked frame {frame_idx}, expected {f}")
                t = time.perf_counter()
                maps = self.segmenter.confidence(encoded, context)
                object_logit = float(self._outputs["non_cond_frame_outputs"][f]["object_score_logits"].float().max())
                iou = predictor.last_iou
                points = PointPrompts(coords=np.zeros((0, 2), np.float32), labels=np.zeros(0, np.int32))
                notes: List[str] = []
                correction_time = 0.0
                if self.options.hybrid and object_logit > self.video.hybrid_min_object_logit:
                    points = self._hybrid_points(maps, context)
                    notes.extend(points.notes)
                    td = time.perf_counter()
                    _, _, masks = predictor.add_new_points_or_box(state, f, OBJECT_ID, points=points.coords,
                                                                  labels=points.labels)
                    predictor.propagate_in_video_preflight(state)  # the correction becomes memory
                    correction_time = time.perf_counter() - td
                    object_logit = float(self._outputs["non_cond_frame_outputs"][f]["object_score_logits"]
                                         .float().max())
                    iou = predictor.last_iou
                logits = masks[0, 0].float().cpu().numpy() if isinstance(masks, torch.Tensor) else masks[0, 0]
                record, mask = self._record(self.layout.frames[f].query, p, choice, logits, maps, points,
                                            object_logit, iou, notes)
                record.confidence = relative_confidence(record.score, context.self_score)
                record.timings = {"encode": encode_time, "decode": decode_time + correction_time,
                                  "synpo": time.perf_counter() - t - correction_time}
                recent.append(f)
                self._forget(recent)
                direction.offer(record, mask)
                end = self.options.end_direction
                if end is not None and end(record):
                    ended = "direction ended"
        finally:
            generator.close()
        direction.close(NOT_SEGMENTED if direction.stopped else (ended or NOT_SEGMENTED))

    def _record(self, index: int, p: Pass, choice: Dict[int, int], logits: np.ndarray, maps: QuerySynergy,
                points: PointPrompts, object_logit: float, iou: Optional[float],
                notes: List[str]) -> Tuple[VideoSliceRecord, np.ndarray]:
        mask_roi = logits > 0
        mask = self.job.q_geometry.logits_to_native(logits) > 0
        if object_logit <= 0:
            notes.append("SAM 2 sees no object on this slice")
        j = choice[p.support]
        if j:
            notes.append(f"matched augmented support copy {j}")
        record = VideoSliceRecord(
            index=index, support_index=p.support,
            points=self.job.q_geometry.points_to_native(points.coords), labels=points.labels,
            score=mask_score(mask_roi, maps.sam), synergy_score=mask_score(mask_roi, maps.syn),
            iou=float("nan") if iou is None else float(iou), pixels=int(mask.sum()),
            notes=tuple(notes), object_score=_sigmoid(object_logit), augmentation=j, direction=p.direction)
        return record, mask


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(min(x, 60.0), -60.0)))


def run(job: Job, sink: ResultSink, options: VideoOptions = VideoOptions()) -> None:
    """Segment ``job``'s slices into ``sink`` with SAM 2.1's video predictor."""
    sink.copy_supports(VideoSliceRecord)
    _VideoRun(job, sink, options).run()


def segment_volume_video(backend: Union[Backend, str], query: np.ndarray, support: Support, *,
                         config: Optional[SynPoConfig] = None,
                         slices: SliceSelection = None,
                         query_spacing: Optional[Sequence[float]] = None,
                         query_window: Optional[Tuple[float, float]] = None,
                         assignment: Optional[Mapping[int, int]] = None,
                         same_volume: Optional[bool] = None,
                         augment: Union[AugmentConfig, int, None] = AugmentConfig(),
                         hybrid: bool = False,
                         video: VideoConfig = VideoConfig(),
                         batch_size: Optional[int] = None,
                         progress: ProgressCallback = None,
                         cancel: CancelCheck = None,
                         end_direction: Optional[Callable[[SliceRecord], bool]] = None) -> VolumeResult:
    """Segment ``query`` along ``support.axis`` with SAM 2.1's video predictor.

    ``backend``: a "sam2" or "synpo" backend (or its registry name); its SAM 2.1 runs
    the video predictor and its encoder pass per slice serves the matching, the
    per-slice score and, with ``synpo``, the hybrid mode's confidence map.
    ``augment``: an :class:`AugmentConfig`, a number of copies, or None (no copies, no
    matching). ``hybrid``: add SynPo's point prompts on every tracked frame.
    ``batch_size`` (as ``segment_volume``'s) overrides ``video.batch_size``.
    ``end_direction(record)``: called after each tracked slice; True ends that
    direction's propagation (the rest of its slices get an empty mask and a record
    saying so), e.g. for an automatic stop at the structure's end.

    Everything else as :func:`SynPoLib.volume.segment_volume`: same-volume support
    slices are copied as labelled, records carry the prototype-similarity score
    (``score``), SAM 2's predicted IoU (``iou``) and object score, auto-stop and the
    acceptance rule apply, the inputs are never written to, a cancelled run raises
    :class:`~SynPoLib.errors.Cancelled`.
    """
    backend = _sam2_backend(backend)
    if config is None:
        config = preset(backend.preset)
    if not isinstance(video, VideoConfig):
        raise TypeError(f"video must be a VideoConfig, got {type(video).__name__}")
    if batch_size is not None:
        video = dataclasses.replace(video, batch_size=int(batch_size))
    job = Job.build(backend, query, support, config, slices=slices, query_spacing=query_spacing,
                    query_window=query_window, assignment=assignment, same_volume=same_volume)
    sink = ResultSink(job, progress, cancel)
    run(job, sink, VideoOptions(augment=_augment_config(augment), video=video, hybrid=hybrid,
                                end_direction=end_direction))
    return sink.result()


__all__ = ["AugmentConfig", "Frame", "Pass", "VideoConfig", "VideoLayout", "VideoOptions", "VideoSliceRecord",
           "memory_reach", "plan_video", "run", "segment_volume_video", "tracking_state_bytes"]
