"""The Ray backend: the process backend's warm pools on every node of a Ray cluster.

`RayExecutor` places Ray actors on the cluster's nodes by their free CPUs
(one actor per ``slots_per_actor`` CPUs, pinned to its node); each actor
holds a warm `sandbox.process.ProcessExecutor` (or a Docker pool,
``pool="docker"``) with that many workers on its node. `run` sends the jobs
to the actors in batches, two batches in flight per actor so that none waits
for the driver, and returns one verdict per job in job order.

What it covers: exactly what the pool backend covers on each node (see
`sandbox.process`): the actors only carry jobs and verdicts, the programs
run in the same isolated harness workers, so the verdicts are the process
backend's. When itercode connects to Ray itself, the sandbox package
travels with the job (`sandbox.ray_runtime`), so every node runs the
driver's harness code; a node needs
Python with ``ray`` (and ``pyseccomp`` for the syscall filter), and root for
the full isolation, as the process backend does.

Faults: when an actor dies (its node is removed or lost, Ray's OOM killer,
a crash) its unfinished batches go back to the front of the queue and run on
the remaining actors; a verdict is delivered once per job, so no sample is
lost or counted twice. Lost actors are replaced at the next `run` where
CPUs are free (a replacement node, say). A job that cannot be placed (no actor is left and
none can be started within ``placement_timeout_s``), or that was lost with
its actor ``MAX_LOSSES`` times, gets a host ``infra_error`` saying why (the
judge runs it once more). A candidate cannot reach its actor: it runs in the
pool's sandbox below it, as a different uid in other namespaces.

What it does not cover: the link between the driver and the cluster is
Ray's (no encryption unless Ray's TLS is set up); anyone who can submit
work to the cluster can run code on its nodes, so keep the cluster's ports
private. Verdicts of different nodes agree only when the nodes run the same
Python and libseccomp (``version`` names every pool version it saw).
"""
from __future__ import annotations

import math
import os
import socket
import time
from collections import deque
from typing import Sequence

from sandbox import make_executor, ray_runtime
from sandbox.base import INFRA_ERROR, Job, Limits, ProgressFn, Verdict

VERSION = "ray-1"
DEPTH = 2  # batches in flight per actor: one running, one waiting in the actor's queue
MAX_BATCH = 16  # jobs per batch at most (a batch's verdicts come back together)
MAX_LOSSES = 3  # a job lost with its actor this many times gets infra_error


class PoolActor:
    """One warm pool on one node (the class Ray runs as an actor)."""

    def __init__(self, slots: int, pool: str, pool_options: dict):
        self.pool = make_executor(pool, workers=slots, **pool_options)

    def info(self) -> dict:
        import ray  # heavy: Ray (already loaded in an actor)

        return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid(),
                "version": str(getattr(self.pool, "version", "")), "isolation": getattr(self.pool, "isolation", {}),
                "candidate_uids": list(getattr(self.pool, "candidate_uids", []) or [])}

    def run(self, jobs: list[Job], limits: Limits) -> list[Verdict]:
        return self.pool.run(jobs, limits)

    def close(self) -> None:
        self.pool.close()


def _cause(error: BaseException) -> str:
    """The line of a Ray error that says what went wrong (Ray puts the remote traceback first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.strip().startswith("^")]
    return f"{type(error).__name__}: {lines[-1][:500] if lines else ''}"


class _Actor:
    """The driver's handle on one pool actor."""

    def __init__(self, handle, node_id: str, slots: int):
        self.handle, self.node_id, self.slots = handle, node_id, slots
        self.info: dict = {}
        self.inflight = 0


def _free_cpus(ray) -> dict[str, float]:
    """Free CPUs per alive node (node id -> CPUs); totals where Ray cannot say what is free (Ray Client)."""
    alive = {n["NodeID"]: n.get("Resources", {}).get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")}
    try:
        from ray._private.state import available_resources_per_node  # heavy: Ray

        free = available_resources_per_node()
        return {node: free.get(node, {}).get("CPU", 0.0) for node in alive}
    except Exception:  # noqa: BLE001 - a private API; the totals are a fair guess
        return alive


def plan_actors(free: dict[str, float], slots_per_actor: int, want: int | None) -> list[str]:
    """The node of each actor to start: round-robin over the nodes, one actor per
    ``slots_per_actor`` free CPUs, until ``want`` slots (``None``: every free CPU).

    >>> plan_actors({"a": 2.0, "b": 1.0}, 1, None)
    ['a', 'b', 'a']
    >>> plan_actors({"a": 2.0, "b": 1.0}, 1, 2)
    ['a', 'b']
    """
    room = {node: int(cpus // slots_per_actor) for node, cpus in sorted(free.items())}
    wanted = math.inf if want is None else math.ceil(want / slots_per_actor)
    plan: list[str] = []
    while len(plan) < wanted and any(room.values()):
        for node in room:
            if room[node] and len(plan) < wanted:
                plan.append(node)
                room[node] -= 1
    return plan


class RayExecutor:
    """Run jobs on warm pools spread over a Ray cluster.

    ``workers``: parallel runs in all (default: every free CPU of the
    cluster); ``address``: see `sandbox.ray_runtime` (default: ``$RAY_ADDRESS``,
    else a local Ray runtime); ``slots_per_actor``: CPUs (and pool workers) of
    each actor (default 1: an actor runs its batch's jobs one after another, so
    a slow job never holds other slots of the actor idle until the batch ends;
    larger actors cost fewer processes per node); ``pool``: the backend each
    actor holds (``process`` or ``docker``); other keyword options go to that
    backend.

    >>> with RayExecutor(workers=2) as ex:                              # doctest: +SKIP
    ...     ex.run([Job("a", "def f():\\n    return 1\\n", "assert f() == 1", "f")], Limits())
    [Verdict(job_id='a', status='passed', ...)]
    """

    name = "ray"

    def __init__(self, workers: int | None = None, *, address: str | None = None, slots_per_actor: int = 1,
                 pool: str = "process", placement_timeout_s: float = 120.0, **pool_options):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if slots_per_actor < 1:
            raise ValueError(f"slots_per_actor must be at least 1, got {slots_per_actor}")
        if pool == "ray":
            raise ValueError("pool='ray' would nest Ray in Ray: give the backend each actor holds (process or docker)")
        self._ray = ray_runtime.acquire(address)
        self._closed = False
        self._wanted, self._slots_per_actor = workers, slots_per_actor
        self._pool, self._pool_options = pool, pool_options
        self._placement_timeout_s = placement_timeout_s
        self._actors: list[_Actor] = []
        self.requeued = 0  # jobs sent again after their actor died (over this executor's life)
        try:
            self._add_actors(block=True)
            if not self._actors:
                raise RuntimeError(self._no_room_message())
        except BaseException:
            self.close()
            raise
        # From now on new actors only replace lost ones: CPUs freed later (a vLLM fleet
        # closed between rounds) stay free for whoever freed them.
        self._wanted = self.workers if workers is None else workers
        first = self._actors[0].info
        self.isolation = first.get("isolation", {})
        versions = sorted({a.info.get("version", "") for a in self._actors})
        self.version = f"{VERSION}/{pool}/{'+'.join(versions)}"

    # -- the actors

    @property
    def workers(self) -> int:
        """Parallel runs now (the live actors' slots)."""
        return sum(a.slots for a in self._actors)

    @property
    def nodes(self) -> list[str]:
        """The node ids the live actors run on (one entry per actor)."""
        return [a.node_id for a in self._actors]

    @property
    def candidate_uids(self) -> list[int]:
        """The uids the pools' candidates run as (on their own nodes)."""
        return [u for a in self._actors for u in a.info.get("candidate_uids", [])]

    def _no_room_message(self) -> str:
        free = _free_cpus(self._ray)
        return (f"no Ray node could host a sandbox actor of {self._slots_per_actor} CPU(s) within "
                f"{self._placement_timeout_s:g} s (free CPUs per node: {free or 'no alive node'}); "
                "add nodes with CPUs (`ray start --address=HEAD:6379 --num-cpus=N`), free some, "
                "or lower slots_per_actor")

    def _add_actors(self, block: bool) -> None:
        """Start actors on the free CPUs (up to the wanted slots); keep those that
        report ready within the placement timeout (``block``) or at once."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # heavy: Ray

        want = None if self._wanted is None else self._wanted - self.workers
        if want is not None and want <= 0:
            return
        plan = plan_actors(_free_cpus(self._ray), self._slots_per_actor, want)
        # Ray's view of free CPUs lags: those of actors just killed (a closed executor's)
        # show up a moment later, so wait for them rather than fail at once.
        deadline = time.monotonic() + self._placement_timeout_s
        while block and not plan and not self._actors and time.monotonic() < deadline:
            time.sleep(0.5)
            plan = plan_actors(_free_cpus(self._ray), self._slots_per_actor, want)
        remote = self._ray.remote(PoolActor)
        started = []
        for node in plan:
            handle = remote.options(
                num_cpus=self._slots_per_actor, max_restarts=0, max_concurrency=1,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            ).remote(self._slots_per_actor, self._pool, self._pool_options)
            started.append(_Actor(handle, node, self._slots_per_actor))
        if not started:
            return
        refs = {a.handle.info.remote(): a for a in started}
        ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=self._placement_timeout_s if block else 0.0)
        if not block and len(ready) < len(refs):  # give the new ones a moment, not the whole timeout
            ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=min(30.0, self._placement_timeout_s))
        failures = []
        for ref, actor in refs.items():
            try:
                if ref not in ready:
                    raise TimeoutError(f"not ready within {self._placement_timeout_s:g} s")
                actor.info = self._ray.get(ref)
                self._actors.append(actor)
            except Exception as e:  # noqa: BLE001 - an actor that cannot start is dropped, and said why
                failures.append(_cause(e))
                self._kill(actor)
        if failures and not self._actors:
            raise RuntimeError(f"no sandbox actor started on Ray; the first failure: {failures[0]}")

    def _kill(self, actor: _Actor) -> None:
        try:
            self._ray.kill(actor.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def _drop(self, actor: _Actor) -> None:
        if actor in self._actors:
            self._actors.remove(actor)
            self._kill(actor)

    # -- running

    def run(self, jobs: Sequence[Job], limits: Limits = Limits(), on_verdict: ProgressFn | None = None) -> list[Verdict]:
        """Run every job; verdicts come back in job order. ``on_verdict`` is
        called in this thread as each batch's verdicts arrive."""
        if self._closed:
            raise RuntimeError("this RayExecutor is closed")
        jobs = list(jobs)
        results: list[Verdict | None] = [None] * len(jobs)
        losses = [0] * len(jobs)
        queue: deque[int] = deque(range(len(jobs)))
        inflight: dict = {}  # ObjectRef -> (actor, job indices)

        def deliver(i: int, verdict: Verdict) -> None:
            if results[i] is None:  # once per job, whatever arrives late
                results[i] = verdict
                if on_verdict is not None:
                    on_verdict(verdict)

        def unplaceable(i: int, why: str) -> None:
            deliver(i, Verdict(jobs[i].job_id, INFRA_ERROR, stderr=f"the Ray sandbox could not run this job: {why}"))

        if self.workers < self._wanted:
            self._add_actors(block=not self._actors)  # replacements for lost actors, where CPUs are free
        while queue or inflight:
            self._submit(jobs, limits, queue, inflight)
            if not inflight:  # work left but no actor to take it
                self._add_actors(block=True)
                if not self._actors:
                    for i in queue:
                        unplaceable(i, self._no_room_message())
                    queue.clear()
                continue
            ready, _ = self._ray.wait(list(inflight), num_returns=1, timeout=0.5)  # short waits keep Ctrl-C responsive
            for ref in ready:
                actor, batch = inflight.pop(ref)
                actor.inflight -= 1
                try:
                    verdicts = self._ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the actor (or its node) died, or its pool broke
                    self._lost(actor, batch, e, queue, losses, unplaceable)
                    continue
                for i, verdict in zip(batch, verdicts):
                    deliver(i, verdict)
        missing = [i for i, v in enumerate(results) if v is None]
        if missing:
            raise RuntimeError(f"the Ray sandbox returned no verdict for {len(missing)} job(s)")
        return results  # type: ignore[return-value]

    def _submit(self, jobs, limits: Limits, queue: deque, inflight: dict) -> None:
        """Fill every live actor up to DEPTH batches; batches shrink as the queue
        does, so that the last jobs spread over all actors."""
        while queue:
            actor = min(self._actors, key=lambda a: a.inflight / a.slots, default=None)
            if actor is None or actor.inflight >= DEPTH:
                return
            capacity = sum(a.slots for a in self._actors) * DEPTH
            size = max(1, min(MAX_BATCH * actor.slots, math.ceil(len(queue) * actor.slots / capacity)))
            batch = [queue.popleft() for _ in range(min(size, len(queue)))]
            ref = actor.handle.run.remote([jobs[i] for i in batch], limits)
            inflight[ref] = (actor, batch)
            actor.inflight += 1

    def _lost(self, actor: _Actor, batch: list[int], error: Exception, queue: deque, losses: list[int],
              unplaceable) -> None:
        """An actor's batch came back without verdicts: drop the actor, queue its jobs again (first in line)."""
        self._drop(actor)
        why = _cause(error)
        again = []
        for i in batch:
            losses[i] += 1
            if losses[i] >= MAX_LOSSES:
                unplaceable(i, f"lost with its actor {losses[i]} times; the last: {why}")
            else:
                again.append(i)
        queue.extendleft(reversed(again))
        self.requeued += len(again)

    def close(self) -> None:
        """Stop every actor (each closes its pool first) and release Ray."""
        if self._closed:
            return
        self._closed = True
        actors, self._actors = self._actors, []
        if actors:
            try:
                free_before = sum(_free_cpus(self._ray).values())
                refs = [a.handle.close.remote() for a in actors]
                self._ray.wait(refs, num_returns=len(refs), timeout=15)
            except Exception:  # noqa: BLE001 - Ray may already be down
                free_before = None
            for actor in actors:
                self._kill(actor)
            if free_before is not None:
                self._await_freed(free_before + sum(a.slots for a in actors))
        ray_runtime.release()

    def _await_freed(self, target: float, timeout_s: float = 5.0) -> None:
        """Wait (a little) until Ray counts the killed actors' CPUs as free, so that an
        executor made right after this one sees the whole cluster."""
        deadline = time.monotonic() + timeout_s
        try:
            while sum(_free_cpus(self._ray).values()) < target and time.monotonic() < deadline:
                time.sleep(0.1)
        except Exception:  # noqa: BLE001 - Ray may be going down
            pass

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not getattr(self, "_closed", True):
                self.close()
        except Exception:  # noqa: BLE001
            pass
