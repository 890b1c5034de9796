"""The ``local`` batch engine: cases in this process, or in a few worker processes.

With one worker the cases run here, one after another, on models loaded once (the
backend cache). With several, each worker process loads the models once when it
starts and then takes cases from a :class:`concurrent.futures.ProcessPoolExecutor`;
workers start by ``spawn`` (forking a process that holds torch's threads is unsafe)
and ignore Ctrl-C: the driver alone hears it and asks them, through a shared event,
to stop at the next slice, so nothing is half-written and their models unload with
them. A worker that dies (killed, out of memory) breaks the pool: the cases it held
go back to the queue (up to ``retries`` times each) and a fresh pool takes over.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

from .case import CaseJob, record_failure, run_case

#: seconds between checks of the stop request while cases run
POLL_SECONDS = 0.25


@dataclass
class EngineReport:
    """What an engine did besides the cases (each record names its worker and that
    worker's model-load time)."""

    engine: str
    workers: int
    notes: List[str] = field(default_factory=list)


def load_models(request, threads: Optional[int] = None) -> float:
    """Build the backend ``request`` names (once per process); returns the seconds it took."""
    from .inputs import backend_options, open_backend

    if threads:
        import torch

        torch.set_num_threads(int(threads))
    started = time.perf_counter()
    open_backend(request.backend, options=backend_options(request))
    return time.perf_counter() - started


def run_sequential(jobs: Sequence[CaseJob], on_start: Callable, on_result: Callable,
                   should_stop: Callable[[], bool], threads: Optional[int] = None) -> EngineReport:
    report = EngineReport("local", 1)
    if not jobs:
        return report
    worker = {"name": "local", "engine": "local", "load_seconds": round(load_models(jobs[0].request, threads), 3)}
    for job in jobs:
        if should_stop():
            break
        on_start(job, "local")
        on_result(run_case(job, should_stop, worker=worker))
    return report


# -- worker processes -------------------------------------------------------------

_stop_event = None
_worker: dict = {}


def _init_worker(request, threads: int, stop_event) -> None:
    """Runs once in each worker process: ignore Ctrl-C (the driver handles it), load the models."""
    global _stop_event, _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_event = stop_event
    _worker = {"name": f"local-{os.getpid()}", "engine": "local",
               "load_seconds": round(load_models(request, threads), 3)}


def _work(job: CaseJob) -> dict:
    return run_case(job, _stop_event.is_set, worker=_worker)


def run_pool(jobs: Sequence[CaseJob], workers: int, on_start: Callable, on_result: Callable,
             should_stop: Callable[[], bool], retries: int = 1, threads: Optional[int] = None) -> EngineReport:
    """Cases on ``workers`` processes, at most one in flight per worker (so a stop or a
    dead worker concerns only the cases in hand)."""
    report = EngineReport("local", workers)
    if not jobs:
        return report
    context = multiprocessing.get_context("spawn")
    stop_event = context.Event()
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    queue = deque(jobs)
    attempts: Dict[str, int] = {}

    def requeue(job: CaseJob) -> None:
        attempts[job.name] = attempts.get(job.name, 0) + 1
        if attempts[job.name] > retries:
            on_result(record_failure(job, f"its worker process died {attempts[job.name]} time(s) while running it "
                                "(out of memory, or killed?)"))
        else:
            queue.appendleft(job)

    while queue and not should_stop():
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                   initargs=(jobs[0].request, threads, stop_event))
        inflight: Dict[object, CaseJob] = {}
        try:
            while queue or inflight:
                if should_stop():
                    stop_event.set()  # workers stop at the next slice and write nothing
                while queue and len(inflight) < workers and not stop_event.is_set():
                    job = queue.popleft()
                    inflight[pool.submit(_work, job)] = job
                    on_start(job, "local worker")
                if not inflight:
                    break
                done, _ = wait(list(inflight), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    job = inflight.pop(future)
                    try:
                        on_result(future.result())
                    except BrokenProcessPool:
                        broken = True
                        requeue(job)
                if broken:
                    for job in inflight.values():  # the pool broke under them too
                        requeue(job)
                    inflight.clear()
                    report.notes.append("a worker process died; its cases went back to the queue")
                    break
        except KeyboardInterrupt:
            stop_event.set()
            for future in list(inflight):
                try:
                    on_result(future.result(timeout=120))
                except Exception:  # noqa: BLE001 - a worker that cannot stop is ended by shutdown
                    pass
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return report


__all__ = ["EngineReport", "load_models", "run_pool", "run_sequential"]
