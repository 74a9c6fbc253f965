"""What the measuring tools share: a fresh process per measurement, step
timing and peak memory."""
import multiprocessing as mp
import queue as queue_module
import resource
import time
from typing import Any, Callable, List

import torch


def _quietly(target: Callable[..., None], *args: Any) -> None:
    """``target(*args)`` without the library notices the tools hide (a
    spawned child does not inherit its parent's warning filters)."""
    from cgrseg.engine.library_notices import library_warnings_ignored
    with library_warnings_ignored():
        target(*args)


def run_in_fresh_process(target: Callable[..., None], *args: Any) -> Any:
    """Call ``target(*args, queue)`` in a new (spawned) process and return
    the object it puts on ``queue``. A child that dies without reporting
    (an exception, whose traceback it prints, or a kill) ends the caller
    with its exit code instead of waiting forever."""
    context = mp.get_context('spawn')
    results = context.Queue()
    proc = context.Process(target=_quietly, args=(target, *args, results))
    proc.start()
    while True:
        try:
            result = results.get(timeout=1)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                raise SystemExit(
                    f'the measuring process failed (exit code '
                    f'{proc.exitcode}); its error is printed above.')
    proc.join()
    return result


def time_steps(step: Callable[[], None], runs: int, warmup: int,
               cuda: bool) -> List[float]:
    """Seconds of each of ``runs`` calls of ``step`` after ``warmup``
    untimed ones (CUDA work included: synchronised around each call)."""
    times = []
    for i in range(warmup + runs):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def current_memory_mib() -> float:
    """The process's resident set now, in MiB (Linux)."""
    with open('/proc/self/statm') as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * resource.getpagesize() / 2**20


def peak_memory_mib(cuda: bool) -> float:
    """``torch.cuda.max_memory_allocated`` on CUDA, else the process's peak
    resident set, in MiB."""
    if cuda:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
