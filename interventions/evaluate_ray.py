""":func:`evaluate_on_ray`: the tasks of :func:`interventions.evaluate.evaluate` on Ray workers.

Each worker (:class:`lens.ray_pool.WorkerPool`) loads the model once with ``load()`` and builds the
conditions with ``make_conditions(model)``; both must be importable functions or ``functools.partial``
of them (Ray sends them by reference). The tasks (:mod:`interventions.eval_tasks`) are cut on
generation-batch boundaries and every sample's seed depends only on its prompt and sample index, so the
result equals the one-process :func:`~interventions.evaluate.evaluate` with the same arguments — except
the timing columns. A worker that dies has its task run again on a fresh worker; the number of such
retries is recorded in the settings (``retried_tasks``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from interventions.conditions import Condition
from interventions.eval_tasks import Generate, Protocol, Task, run_task, setup_state
from interventions.evaluate import Evaluation, run_evaluation
from lens.model import LensModel
from lens.ray_pool import WorkerPool


def evaluate_on_ray(
    load: Callable[[], LensModel],
    make_conditions: Callable[[LensModel], Sequence[Condition]],
    protocol: Protocol,
    *,
    workers: int,
    address: str | None = None,
    threads: int | None = None,
    gpus_per_worker: float = 0.0,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    on_dispatch: Callable[[Any, int], None] | None = None,
) -> Evaluation:
    """Run the evaluation ``protocol`` of ``make_conditions``' conditions on ``workers`` Ray actors."""
    from tqdm.auto import tqdm

    say = say or (lambda _msg: None)
    say(f"starting {workers} Ray workers (each loads the model once)")
    setup = functools.partial(setup_state, load, make_conditions, protocol)
    t0 = time.perf_counter()
    with WorkerPool(
        workers, setup, address=address, threads=threads, gpus_per_worker=gpus_per_worker
    ) as pool:

        def execute(tasks: Sequence[Task]) -> list[Any]:
            n = sum(t.stop - t.start for t in tasks if isinstance(t, Generate))
            bar = tqdm(total=n, unit="sample", disable=not progress or n == 0, desc="samples")

            def done(i: int, result: Any) -> None:
                if isinstance(tasks[i], Generate):
                    bar.update(len(result.records))

            try:
                return pool.map(run_task, list(tasks), on_result=done, on_dispatch=on_dispatch)
            finally:
                bar.close()

        startup_s = time.perf_counter() - t0
        result = run_evaluation(execute, protocol, say)
        result.settings["startup_s"] = startup_s
        result.settings["workers"] = workers
        result.settings["ray_address"] = address
        result.settings["retried_tasks"] = len(pool.retried)
    return result
