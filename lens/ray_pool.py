"""Run independent work items on a pool of Ray actors that each load the model once (``toxlens[ray]``).

:class:`WorkerPool` is the one distributed engine of the package: ``toxlens evaluate --workers N`` and
``toxlens locate --workers N`` both hand it a list of payloads and a task function.

* **Workers.** Each actor calls ``setup()`` once (load the model, build what the task needs) and keeps
  the result as its *state*; a task is ``fn(state, payload) -> result``. ``setup`` and ``fn`` must be
  importable module-level functions (or ``functools.partial`` of them): Ray sends them by reference.
  Each actor sets ``torch.set_num_threads(threads)``.
* **Cluster.** With ``address=None`` Ray starts a local cluster (``num_cpus`` large enough for the
  workers) and shuts it down on :meth:`close`; with an address (``auto``, ``HOST:PORT`` or
  ``ray://HOST:PORT``) it joins that cluster, after a TCP reachability check so a wrong address fails
  at once. If Ray is already initialised in this process (a notebook, a test), that cluster is used and
  left running.
* **Failures.** A worker that dies (killed, out of memory, node lost) has its in-flight item put back
  at the front of the queue; a fresh actor replaces it (at most ``max_replacements`` in a run) and the
  item runs again there. Results are stored by item index, so no item is lost or counted twice.
  An exception *raised by the task* is not a worker failure: it stops the run and is re-raised as a
  :class:`~lens.errors.ToxlensError` naming the item.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from lens.errors import ToxlensError

INSTALL_HINT = "pip install 'toxlens[ray]' (or: pip install ray)"


def require_ray(workers: int) -> Any:
    """The ``ray`` module, or a ToxlensError saying how to get it."""
    try:
        return importlib.import_module("ray")
    except ImportError as err:
        raise ToxlensError(f"--workers {workers} needs Ray, which is not installed: {INSTALL_HINT}") from err


def check_address(address: str, timeout: float = 5.0) -> None:
    """Refuse a ``--ray-address`` that is malformed or has nothing listening (``auto`` is checked by Ray)."""
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ToxlensError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ToxlensError(
            f"--ray-address {address!r}: no Ray head reachable at {host}:{port} within {timeout:g} s ({err})"
        ) from err


class _Actor:
    """The body of each Ray actor (wrapped by ``ray.remote`` in :class:`WorkerPool`)."""

    def __init__(self, setup: Callable[[], Any], threads: int | None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.error: str | None = None
        self.state: Any = None
        try:
            self.state = setup()
        except Exception as err:  # reported by ready(), so the driver can raise it with context
            self.error = f"{type(err).__name__}: {err}"

    def ready(self) -> tuple[str | None, int]:
        return self.error, os.getpid()

    def run(self, fn: Callable[[Any, Any], Any], payload: Any) -> Any:
        return fn(self.state, payload)


class WorkerPool:
    """``workers`` Ray actors, each holding ``setup()``'s state (see the module docstring)."""

    def __init__(
        self,
        workers: int,
        setup: Callable[[], Any],
        *,
        address: str | None = None,
        threads: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        max_replacements: int | None = None,
        ready_timeout_s: float = 600.0,
    ) -> None:
        if workers < 1:
            raise ToxlensError(f"--workers must be >= 1, got {workers}")
        self.ray = require_ray(workers)
        if address is not None:
            check_address(address)
        self.owns_cluster = False
        if not self.ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                kwargs["num_cpus"] = max(os.cpu_count() or 1, int(workers * cpus_per_worker + 0.999))
            try:
                # "local": a new cluster, never one that another process started on this machine
                self.ray.init(address=address or "local", **kwargs)
            except Exception as err:
                hint = (
                    "; if that cluster uses token authentication (Ray >= 2.59 turns it on for clusters "
                    "started with `ray start`), set RAY_AUTH_MODE=token here too, with RAY_AUTH_TOKEN or "
                    "~/.ray/auth_token holding the token of `ray get-auth-token`"
                    if address is not None
                    else ""
                )
                raise ToxlensError(
                    f"could not start or join a Ray cluster (address {address!r}): {err}{hint}"
                ) from err
            self.owns_cluster = True
        self.setup, self.threads = setup, threads
        self.options = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker}
        self.max_replacements = workers if max_replacements is None else max_replacements
        self.replacements = 0
        self.retried: list[int] = []
        self.ready_timeout_s = ready_timeout_s
        self.actors = [self._spawn() for _ in range(workers)]
        self._wait_ready(self.actors)

    def _spawn(self) -> Any:
        cls = self.ray.remote(**self.options)(_Actor)
        return cls.remote(self.setup, self.threads)

    def _wait_ready(self, actors: list[Any]) -> None:
        refs = [a.ready.remote() for a in actors]
        done, pending = self.ray.wait(refs, num_returns=len(refs), timeout=self.ready_timeout_s)
        if pending:
            self.close()
            raise ToxlensError(
                f"{len(pending)} of {len(refs)} Ray workers did not start within {self.ready_timeout_s:g} s: "
                f"the cluster may lack the resources asked for ({self.options} per worker; "
                f"cluster has {self.ray.cluster_resources()})"
            )
        exceptions = importlib.import_module("ray.exceptions")
        for ref in done:
            try:
                error, _pid = self.ray.get(ref)
            except exceptions.RayError as err:  # the actor could not even be created (e.g. unpicklable setup)
                error = f"{type(err).__name__}: {str(err).splitlines()[-1] if str(err) else err}"
            if error is not None:
                self.close()
                raise ToxlensError(f"a Ray worker could not set up: {error}")

    def map(
        self,
        fn: Callable[[Any, Any], Any],
        payloads: Sequence[Any],
        on_result: Callable[[int, Any], None] | None = None,
        on_dispatch: Callable[[Any, int], None] | None = None,
    ) -> list[Any]:
        """``[fn(state, p) for p in payloads]``, run on the workers; ``on_result(i, r)`` as each finishes
        (in completion order), ``on_dispatch(actor, i)`` as each is sent (a test uses it to kill one)."""
        ray = self.ray
        exceptions = importlib.import_module("ray.exceptions")
        results: dict[int, Any] = {}
        queue = deque(range(len(payloads)))
        idle = list(self.actors)
        inflight: dict[Any, tuple[Any, int]] = {}
        while queue or inflight:
            while queue and idle:
                actor, i = idle.pop(0), queue.popleft()
                inflight[actor.run.remote(fn, payloads[i])] = (actor, i)
                if on_dispatch is not None:
                    on_dispatch(actor, i)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, i = inflight.pop(ref)
                try:
                    value = ray.get(ref)
                except exceptions.RayActorError as err:
                    self._replace(actor, i, err)
                    queue.appendleft(i)
                    idle.append(self.actors[-1])
                    continue
                except exceptions.RayTaskError as err:
                    self.close()
                    cause = err.cause if getattr(err, "cause", None) is not None else err
                    what = (
                        str(cause) if isinstance(cause, ToxlensError) else f"{type(cause).__name__}: {cause}"
                    )
                    raise ToxlensError(f"work item {i} failed on a Ray worker: {what}") from err
                results[i] = value
                idle.append(actor)
                if on_result is not None:
                    on_result(i, value)
        return [results[i] for i in range(len(payloads))]

    def _replace(self, dead: Any, item: int, err: Exception) -> None:
        self.actors.remove(dead)
        self.replacements += 1
        self.retried.append(item)
        if self.replacements > self.max_replacements:
            self.close()
            raise ToxlensError(
                f"Ray workers died {self.replacements} times (limit {self.max_replacements}); "
                f"last while running work item {item}: {err}"
            )
        fresh = self._spawn()
        self._wait_ready([fresh])
        self.actors.append(fresh)

    def close(self) -> None:
        for a in self.actors:
            with contextlib.suppress(Exception):  # already dead
                self.ray.kill(a)
        self.actors = []
        if self.owns_cluster and self.ray.is_initialized():
            self.ray.shutdown()
            self.owns_cluster = False

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
