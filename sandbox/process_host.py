"""What the process backend prepares and cleans up on the host, outside any
worker: the paths a run's minimal root shows, and the slots' cgroups (a
worker cannot remove its own: after its chroot they are out of its sight)."""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from sandbox.harness.isolation import kill_cgroup_procs

CGROUP_ROOTS = ("/sys/fs/cgroup/memory/itercode", "/sys/fs/cgroup/pids/itercode")


@functools.lru_cache(maxsize=None)
def visible_paths() -> tuple[str, ...]:
    """The host paths a run may see, read-only, in its minimal root: the same
    parts of this interpreter that the Docker image holds (its standard
    library, its executable, the shared library files they load) and the
    loader's cache. Nothing else of the host: not the project, not
    site-packages, not any file of problems, results or verdicts.

    ``ldd`` over the standard library's extension modules takes a second, so
    the answer is kept on disk, keyed by the interpreter."""
    from sandbox.image import PythonLayout, shared_libraries

    layout = PythonLayout.of_running_interpreter()
    key = hashlib.sha256(f"{layout.executable}:{layout.executable.stat().st_mtime_ns}:{layout.stdlib}".encode())
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "itercode" / f"root-{key.hexdigest()[:16]}.json"
    try:
        return tuple(json.loads(store.read_text()))
    except (OSError, ValueError):
        pass
    dynload = sorted((layout.stdlib / "lib-dynload").glob("*.so"))
    libs = {str(lib) for lib in shared_libraries([layout.executable, *dynload])}
    paths = (str(layout.stdlib), str(layout.executable), *sorted(libs), "/etc/ld.so.cache")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(paths))
        os.replace(tmp, store)
    except OSError:
        pass  # computed again next time
    return paths


def remove_cgroups(name: str) -> None:
    """Kill what is left in one slot's cgroups and remove them (a worker
    cannot: after its chroot the parent groups are out of its sight)."""
    for root in CGROUP_ROOTS:
        path = os.path.join(root, name)
        kill_cgroup_procs(path)
        try:
            os.rmdir(path)
        except OSError:
            pass


def sweep_stale_cgroups() -> None:
    """Remove cgroups left by workers that died without cleaning up (a
    SIGKILLed itercode), killing anything still inside them."""
    names = set()
    for root in CGROUP_ROOTS:
        try:
            names.update(os.listdir(root))
        except OSError:
            continue
    for name in names:
        parts = name.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue  # not a name this module makes
        if not Path(f"/proc/{parts[0]}").exists():  # its itercode process is gone
            remove_cgroups(name)
