"""The ``ray`` batch engine: one actor per GPU (or per N CPU cores) holding the models,
each case a task on an actor, on this machine or on a Ray cluster (``address``).

Ray does the scheduling, the resources and the recovery: actors are created with
``num_gpus`` / ``num_cpus`` (Ray places them and sets ``CUDA_VISIBLE_DEVICES``),
``max_restarts`` (a dead actor's process is started again, loading the models again)
and ``max_task_retries`` (the case it held is sent again to the restarted actor). The
driver sends cases only to actors that are up, one case in flight per actor, so a stop
or a death concerns only the cases in hand and an actor a busy cluster cannot place
yet holds none; it keeps which case each task is, so a failure is reported against
its case. Every worker writes its case's files into the output folder, which must be
the same path on every node (a shared file system); see docs/batch-on-ray.md.

Ctrl-C (or a cancel) asks each actor to stop at the next slice (the actors run two
threads: one for the case, one to hear the request), waits for them to return with
nothing written, then ends them; the next run resumes.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
import warnings
from collections import deque
from typing import Callable, Dict, Optional, Sequence

from ..errors import InputError
from .case import CaseJob, record_failure, run_case
from .engine_local import POLL_SECONDS, EngineReport, load_models

#: Ray's namespace for the batch's named actors (``ray.get_actor(name, namespace=NAMESPACE)``)
NAMESPACE = "synpo"
#: seconds the driver waits for actors to stop after Ctrl-C before it ends them   [G]
STOP_GRACE_SECONDS = 60.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--engine ray needs Ray: pip install 'synpo[ray]' (the same Ray version as the "
                         "cluster's)") from None
    return ray


class CaseWorker:
    """A Ray actor's body: the models, loaded once, and cases run one at a time."""

    def __init__(self, request, threads: int) -> None:
        import ray

        self.stop_event = threading.Event()
        context = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray's own property trips its own deprecation warning
            warnings.simplefilter("ignore")
            restarted = bool(context.was_current_actor_reconstructed)
        self.info = {"name": context.get_actor_name(), "engine": "ray", "node": context.get_node_id()[:12],
                     "restarted": restarted, "pid": os.getpid(),
                     "gpus": [str(g) for g in ray.get_gpu_ids()]}
        self.info["load_seconds"] = round(load_models(request, threads), 3)

    def run(self, job: CaseJob) -> dict:
        self.stop_event.clear()
        return run_case(job, self.stop_event.is_set, worker=self.info)

    def stop(self) -> None:
        self.stop_event.set()

    def describe(self) -> dict:
        return dict(self.info)


def plan_workers(ray, jobs: Sequence[CaseJob], workers: Optional[int], cpus_per_worker: float,
                 gpus_per_worker: Optional[float]) -> tuple:
    """(actors, CPUs each, GPUs each) for the cluster Ray sees now."""
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
    device = (jobs[0].request.device or "auto") if jobs else "auto"
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 and not str(device).startswith(("cpu", "mps")) else 0.0
    if gpus_per_worker > 0 and gpus < gpus_per_worker:
        raise InputError(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has {gpus:g} GPU(s)")
    if cpus_per_worker > cpus:
        raise InputError(f"--cpus-per-worker {cpus_per_worker:g}: the Ray cluster has {cpus:g} CPU(s)")
    room = int(gpus // gpus_per_worker) if gpus_per_worker > 0 else int(cpus // cpus_per_worker)
    if workers and workers > room:
        # an actor Ray cannot place would hold its case forever: ask for no more than fit
        raise InputError(f"--workers {workers}: the Ray cluster has room for {room} worker(s) of "
                         f"{cpus_per_worker:g} CPU(s)" + (f" and {gpus_per_worker:g} GPU(s)" if gpus_per_worker else "")
                         + " each")
    return max(1, min(int(workers or room), len(jobs))), cpus_per_worker, gpus_per_worker


def run_ray(jobs: Sequence[CaseJob], on_start: Callable, on_result: Callable, should_stop: Callable[[], bool],
            workers: Optional[int] = None, address: Optional[str] = None, cpus_per_worker: float = 1.0,
            gpus_per_worker: Optional[float] = None, retries: int = 2,
            on_actors: Optional[Callable[[list], None]] = None) -> EngineReport:
    """Run ``jobs`` on Ray actors; ``on_actors`` receives the actors' names once created."""
    ray = import_ray()
    report = EngineReport("ray", 0)
    if not jobs:
        return report
    started_here = False
    if not ray.is_initialized():
        # log_to_driver off: the progress bar stays readable; each record carries its error
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started_here = address is None
    actors = []
    try:
        count, cpus, gpus = plan_workers(ray, jobs, workers, cpus_per_worker, gpus_per_worker)
        report.workers = count
        threads = max(1, int(cpus))
        run_id = uuid.uuid4().hex[:8]
        names = [f"synpo-batch-{run_id}-{i}" for i in range(count)]
        # max_concurrency=2: a stop request is heard while a case runs (only one case is
        # ever sent to an actor at a time)
        options = dict(num_cpus=cpus, num_gpus=gpus, max_restarts=retries, max_task_retries=retries,
                       max_concurrency=2, namespace=NAMESPACE)
        remote = ray.remote(CaseWorker)
        actors = [remote.options(name=name, **options).remote(jobs[0].request, threads) for name in names]
        if on_actors is not None:
            on_actors(list(names))
        _dispatch(ray, jobs, dict(zip(names, actors)), on_start, on_result, should_stop, report)
    finally:
        for actor in actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if started_here:
            ray.shutdown()
    return report


def _dispatch(ray, jobs, actors: Dict[str, object], on_start, on_result, should_stop, report) -> None:
    from ray.exceptions import RayActorError, RayError

    queue = deque(jobs)
    idle: deque = deque()
    # a case goes only to an actor that is up (its models loaded): an actor Ray cannot
    # place yet (a busy shared cluster) holds no case, the others take them all
    starting = {actor.describe.remote(): name for name, actor in actors.items()}
    inflight: Dict[object, tuple] = {}  # task ref -> (job, actor name)
    stopping = False
    ever_up = False
    why_gone = start_error = ""
    try:
        while queue or inflight:
            if not stopping and should_stop():
                stopping = True
                for name in {n for _, n in inflight.values()}:
                    actors[name].stop.remote()
            while queue and idle and not stopping:
                name = idle.popleft()
                job = queue.popleft()
                inflight[actors[name].run.remote(job)] = (job, name)
                on_start(job, name)
            if not inflight and (stopping or not queue or not starting):
                if queue and not stopping and not ever_up:  # a problem of the whole batch: no case ran
                    raise InputError(f"no Ray worker could start: {start_error}")
                if queue and not stopping:  # every actor is gone for good
                    for job in queue:
                        on_result(record_failure(job, "no Ray worker left: every actor died beyond its restarts"
                                                      + (f" ({why_gone})" if why_gone else "")))
                    queue.clear()
                break
            ready, _ = ray.wait(list(inflight) + list(starting), num_returns=1, timeout=POLL_SECONDS)
            for ref in ready:
                if ref in starting:
                    name = starting.pop(ref)
                    try:
                        ray.get(ref)
                    except RayError as exc:  # its models could not be loaded (device, weights...)
                        start_error = _first_line(exc)
                        why_gone = f"{name} could not start: {start_error}"
                        report.notes.append(why_gone)
                        continue
                    idle.append(name)
                    ever_up = True
                    continue
                job, name = inflight.pop(ref)
                try:
                    record = ray.get(ref)
                except RayActorError as exc:
                    # Ray restarted the actor and retried the case max_task_retries times
                    why_gone = f"{name} died beyond its restarts"
                    report.notes.append(why_gone)
                    on_result(record_failure(job, f"its Ray worker died: {_first_line(exc)}"))
                    continue
                except RayError as exc:
                    on_result(record_failure(job, f"Ray error: {_first_line(exc)}"))
                    idle.append(name)
                    continue
                idle.append(name)
                on_result(record)
    except KeyboardInterrupt:
        for name in {n for _, n in inflight.values()}:
            try:
                actors[name].stop.remote()
            except Exception:  # noqa: BLE001
                pass
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while inflight and time.monotonic() < deadline:
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=1.0)
            for ref in ready:
                job, _ = inflight.pop(ref)
                try:
                    on_result(ray.get(ref))
                except Exception:  # noqa: BLE001 - a case that cannot report is simply not done
                    pass
        raise


def _first_line(exc: BaseException) -> str:
    """What a person needs of a Ray error: the cause's own message when the actor's
    start (model loading) raised, else Ray's first line."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
    text = lines[0]
    if "creation task" in text and len(lines) > 1:
        text = lines[-1]
        for prefix in ("SynPoLib.errors.",):
            if text.startswith(prefix):
                text = text[len(prefix):].split(": ", 1)[-1]
    return text[:300]


__all__ = ["CaseWorker", "NAMESPACE", "import_ray", "plan_workers", "run_ray"]
