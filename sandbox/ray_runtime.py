"""The one connection to Ray that itercode's Ray parts share (the sandbox's
actors, the vLLM fleet's replicas).

``acquire(address)`` connects this process to Ray once: to ``address``
(``auto``: the cluster that ``ray start`` made on this machine;
``ray://HOST:PORT``: a remote cluster through Ray Client; ``HOST:PORT``: a
cluster's GCS), else to ``$RAY_ADDRESS``, else it starts a small local Ray
runtime (this machine's CPUs, no dashboard, warnings only). Every ``acquire``
is paired with a ``release``; the last ``release`` shuts down a runtime that
``acquire`` started. A Ray that the caller initialised itself (``ray.init``
before any itercode part) is used as it is and never shut down here.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from pathlib import Path

# A small object store: jobs and verdicts are kilobytes, and Ray's default
# (30% of the machine's memory) is a lot to reserve on a shared machine.
LOCAL_OBJECT_STORE_BYTES = 256 << 20
SANDBOX_PACKAGE = str(Path(__file__).resolve().parent)

_lock = threading.Lock()
_users = 0
_started_here = False


def _quiet_environment() -> None:
    # No usage-stats prompt or upload (these machines are often offline), and
    # no repeated-log summaries from the workers.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def import_ray():
    """``ray``, or an ImportError that names the fix."""
    _quiet_environment()
    try:
        import ray  # heavy, optional: the ray extra
    except ImportError as e:
        raise ImportError(f"the Ray backends need the `ray` package ({e}); install it with "
                          "`pip install 'itercode[ray]'` (or `pip install ray`) on every node") from None
    return ray


def init_options(address: str | None) -> dict:
    """The keyword arguments of ``ray.init`` for ``address`` (resolved as in the module docstring).

    On a cluster the sandbox package travels with the job (Ray's
    ``py_modules``), so every node runs this driver's harness code, whatever
    itercode it has installed; a local runtime's workers import it from here.
    """
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    ship = {"py_modules": [SANDBOX_PACKAGE], "excludes": ["__pycache__"]}
    if address.startswith("ray://"):  # Ray Client takes few options
        return {"address": address, "logging_level": logging.WARNING, "runtime_env": ship}
    options = {"address": address, "logging_level": logging.WARNING, "log_to_driver": False}
    if address == "local":
        # Our own runtime: its workers are started from this process's environment
        # (see `_local_workers_import_us`) on this machine's files, so nothing is
        # shipped. Without a runtime env, Ray's prestarted idle workers take the
        # sandbox actors at once; a runtime env needs fresh worker processes, about
        # a second each (the bulk of the Ray backend's start-up).
        options.update(num_cpus=os.cpu_count() or 1, include_dashboard=False,
                       object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    else:
        options["runtime_env"] = ship
    return options


@contextlib.contextmanager
def _local_workers_import_us():
    """While a local runtime starts, PYTHONPATH leads with the directory that
    holds this sandbox package (and the rest of itercode beside it), so the
    runtime's workers, which inherit the environment, import this code,
    whatever is installed; the caller's PYTHONPATH is restored afterwards."""
    before = os.environ.get("PYTHONPATH")
    root = str(Path(SANDBOX_PACKAGE).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([root, before] if before else [root])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = before


def acquire(address: str | None = None):
    """Connect to Ray (see the module docstring); returns the ``ray`` module."""
    global _users, _started_here
    ray = import_ray()
    with _lock:
        if not ray.is_initialized():
            options = init_options(address)
            local = options["address"] == "local"
            try:
                with _local_workers_import_us() if local else contextlib.nullcontext():
                    ray.init(**options)
            except ConnectionError as e:
                raise ConnectionError(
                    f"cannot reach a Ray cluster at {options['address']!r} ({e}); start one with "
                    "`ray start --head` (then --ray-address auto), give its address as ray://HOST:10001, "
                    "or leave --ray-address out for a local Ray runtime") from None
            _started_here = True
        _users += 1
    return ray


def release() -> None:
    """Undo one `acquire`; the last one shuts down a runtime that `acquire` started."""
    global _users, _started_here
    with _lock:
        _users = max(0, _users - 1)
        if _users == 0 and _started_here:
            import ray  # heavy: loaded already by acquire

            _started_here = False
            if ray.is_initialized():
                ray.shutdown()
