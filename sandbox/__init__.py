"""Execution backends behind one `Executor` protocol (see sandbox/base.py).

    >>> from sandbox import make_executor, Job, Limits       # doctest: +SKIP
    >>> with make_executor("process", workers=2) as ex:       # doctest: +SKIP
    ...     verdicts = ex.run(jobs, Limits(timeout_s=3))

Backends import their heavy dependencies only when chosen.
"""
from __future__ import annotations

from sandbox.base import (ERROR, FAILED, INFRA_ERROR, OOM, PASSED, STATUSES, TIMEOUT, Executor, Job, Limits,
                          Verdict)

# The one list of backend names: the CLI's choices and help texts, the loop's config
# and the server read it. The first is the default (needs no daemon); `ray`
# spreads process (or docker) pools over a Ray cluster.
BACKENDS = ("process", "docker", "ray")
DEFAULT_BACKEND = BACKENDS[0]

__all__ = ["make_executor", "backend_options", "BACKENDS", "DEFAULT_BACKEND", "Executor", "Job", "Limits", "Verdict", "STATUSES",
           "PASSED", "FAILED", "ERROR", "TIMEOUT", "OOM", "INFRA_ERROR"]


def make_executor(name: str = DEFAULT_BACKEND, workers: int | None = None, **options) -> Executor:
    """Build the sandbox backend ``name`` with ``workers`` parallel slots.

    ``process`` (the default) needs no daemon; ``docker`` needs a reachable
    dockerd; ``ray`` needs the ``ray`` package (option ``address``: see
    `sandbox.ray_runtime`). Extra keyword options go to the backend's
    constructor (`backend_options` builds them from the CLI's and configs'
    values).
    """
    if name == "process":
        from sandbox.process import ProcessExecutor

        return ProcessExecutor(workers=workers, **options)
    if name == "docker":
        from sandbox.docker_backend import DockerExecutor

        return DockerExecutor(workers=workers, **options)
    if name == "ray":
        from sandbox.ray_backend import RayExecutor

        return RayExecutor(workers=workers, **options)
    raise ValueError(f"unknown sandbox backend {name!r}; choose one of: {', '.join(BACKENDS)}")


def backend_options(name: str, ray_address: str | None = None) -> dict:
    """The constructor options that the CLI's ``--ray-address`` (and the configs'
    ``ray_address``) give backend ``name``; an address for another backend is
    a ValueError that names the fix.

    >>> backend_options("ray", "auto")
    {'address': 'auto'}
    >>> backend_options("process")
    {}
    """
    if ray_address and name != "ray":
        raise ValueError(f"a Ray address ({ray_address!r}) is for the ray backend, not {name!r}: "
                         "drop it or choose the ray backend")
    return {"address": ray_address} if ray_address else {}
