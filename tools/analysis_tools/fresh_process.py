"""Run one measurement in a fresh process and return what it reports."""
import multiprocessing as mp
import queue as queue_module
from typing import Any, Callable


def run_in_fresh_process(target: Callable[..., None], *args: Any) -> Any:
    """Call ``target(*args, queue)`` in a new (spawned) process and return
    the object it puts on ``queue``. A child that dies without reporting
    (an exception, whose traceback it prints, or a kill) ends the caller
    with its exit code instead of waiting forever."""
    context = mp.get_context('spawn')
    results = context.Queue()
    proc = context.Process(target=target, args=(*args, results))
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
