"""The wipe between runs: ``sandbox.harness.wipe.empty_dir`` on every tree a
run can make, and end to end on both backends: a run that leaves a hostile
tree (deep, wide, unwritable, special files) must not spoil the next run on
its worker.

The unit tests build their trees in a temp dir, and when this suite runs as
root they also run as an unprivileged uid (65534) in a forked child, since
root's CAP_DAC_OVERRIDE would hide every mode problem (the Docker backend's
container server wipes as an unprivileged uid).
"""
from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import socket
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from pathlib import Path

import pytest
from conftest import require_docker

from sandbox import PASSED, Job, Limits, make_executor
from sandbox.harness.wipe import MAX_OPEN_FDS, empty_dir, is_empty, remove_tree

NOBODY = 65534
USERS = ["self", pytest.param("nobody", marks=pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch uid"))]
PATH_MAX = os.pathconf("/", "PC_PATH_MAX")


# --------------------------------------------------------------------------- helpers


def as_user(user: str, fn, *args):
    """``fn(*args)`` in this process ("self") or, for "nobody", in a forked
    child that switched to uid 65534 first; returns fn's (JSON) result."""
    if user == "self":
        return fn(*args)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            out = json.dumps({"ok": fn(*args)})
            code = 0
        except BaseException:  # noqa: BLE001 - carried back to the parent
            out = json.dumps({"error": traceback.format_exc()})
        with os.fdopen(w, "w") as fh:
            fh.write(out)
        os._exit(code)
    os.close(w)
    with os.fdopen(r) as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    reply = json.loads(data)
    assert "error" not in reply, reply.get("error")
    return reply["ok"]


@pytest.fixture
def scratch():
    """A directory the unprivileged uid may use (tmp_path's parents are closed
    to it), on tmpfs like the runs' own directories where the host has one
    (and much faster to fill than a journaled disk); removed with empty_dir
    even if a test failed."""
    path = tempfile.mkdtemp(prefix="itercode-wipe-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)
    yield path
    empty_dir(path)
    os.rmdir(path)


@pytest.fixture
def outside(tmp_path):
    """A directory and a file the tree's symlinks point at: they must survive."""
    target = tmp_path / "outside"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    os.chmod(tmp_path, 0o755)  # readable by the unprivileged uid (the links need not resolve, but may)
    return str(target)


def assert_outside_intact(target: str) -> None:
    assert Path(target, "keep.txt").read_text() == "keep", "the wipe followed a symlink out of its directory"


def deep_chain(top: str, depth: int, every: int = 0, outside: str = "") -> int:
    """A chain top/d/d/... ``depth`` directories deep, built through dir fds
    (no path ever gets long). With ``every``: each every-th level also holds a
    file with no permissions and a symlink to ``outside``, and is left with
    mode 000 or 0o200 (after its child was made, so the build goes on)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            if every and level and level % every == 0:
                os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o000, dir_fd=fd))
                if outside:
                    os.symlink(outside, "out", dir_fd=fd)
                os.fchmod(fd, 0o000 if level % (2 * every) else 0o200)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return depth


def wipe_report(top: str) -> dict:
    """empty_dir's result and what is left, for the parent to assert on."""
    started = time.perf_counter()
    failed = empty_dir(top)
    return {"failed": failed, "left": os.listdir(top), "empty": is_empty(top),
            "seconds": time.perf_counter() - started}


def assert_clean(report: dict) -> None:
    assert report["failed"] == [], report["failed"]
    assert report["left"] == [] and report["empty"]


# --------------------------------------------------------------------------- empty_dir


def test_an_empty_dir_takes_one_quick_look(scratch):
    assert empty_dir(scratch) == [] and is_empty(scratch)
    started = time.perf_counter()
    for _ in range(100):
        empty_dir(scratch)
    assert (time.perf_counter() - started) / 100 < 0.005  # measured ~50 us


def test_a_missing_dir_has_nothing_to_remove(tmp_path):
    assert empty_dir(str(tmp_path / "missing")) == []
    assert not is_empty(str(tmp_path / "missing"))


@pytest.mark.parametrize("user", USERS)
def test_deep_tree_beyond_path_max_and_the_recursion_limit(scratch, user):
    def build_and_wipe(top):
        depth = deep_chain(top, 20_000)
        return depth, wipe_report(top)

    depth, report = as_user(user, build_and_wipe, scratch)
    assert 2 * depth > 4 * PATH_MAX  # the bottom's path ("d/" per level) is far beyond PATH_MAX
    assert_clean(report)


@pytest.mark.parametrize("user", USERS)
def test_deep_tree_with_locked_levels_symlinks_and_unreadable_files(scratch, outside, user):
    def build_and_wipe(top, target):
        deep_chain(top, 5_000, every=97, outside=target)
        os.chmod(os.path.join(top, "d"), 0o000)  # the first level too
        return wipe_report(top)

    assert_clean(as_user(user, build_and_wipe, scratch, outside))
    assert_outside_intact(outside)


@pytest.mark.parametrize("user", USERS)
def test_wide_dir_of_50000_files(scratch, user):
    def build_and_wipe(top):
        wide = os.path.join(top, "wide")
        os.mkdir(wide)
        fd = os.open(wide, os.O_RDONLY | os.O_DIRECTORY)
        for i in range(50_000):
            os.close(os.open(str(i), os.O_CREAT | os.O_WRONLY, 0o600, dir_fd=fd))
        os.close(fd)
        os.chmod(wide, 0o500)  # listable, but its entries cannot be unlinked as is
        return wipe_report(top)

    assert_clean(as_user(user, build_and_wipe, scratch))


@pytest.mark.parametrize("user", USERS)
@pytest.mark.parametrize("mode", [0o000, 0o200, 0o100, 0o400, 0o500])
def test_directories_and_files_without_permissions(scratch, user, mode):
    def build_and_wipe(top, mode):
        outer = os.path.join(top, "outer")
        inner = os.path.join(outer, "inner")
        os.makedirs(inner)
        for d in (outer, inner):
            for name in ("no-perms", "read-only"):
                Path(d, name).write_text("x")
            os.chmod(os.path.join(d, "no-perms"), 0)
            os.chmod(os.path.join(d, "read-only"), 0o400)
        os.chmod(inner, mode)
        os.chmod(outer, mode)  # inner is now reachable only after outer is fixed
        return wipe_report(top)

    assert_clean(as_user(user, build_and_wipe, scratch, mode))


@pytest.mark.parametrize("user", USERS)
def test_symlinks_are_unlinked_never_followed(scratch, outside, user):
    def build_and_wipe(top, target):
        os.symlink(target, os.path.join(top, "to-outside"))
        os.symlink(os.path.join(target, "keep.txt"), os.path.join(top, "to-file"))
        os.symlink("/", os.path.join(top, "to-root"))
        os.symlink("loop", os.path.join(top, "loop"))
        os.symlink("nowhere", os.path.join(top, "dangling"))
        os.makedirs(os.path.join(top, "a", "b"))
        os.symlink(target, os.path.join(top, "a", "b", "c"))  # a link where a directory could be
        os.symlink("..", os.path.join(top, "a", "up"))
        return wipe_report(top)

    assert_clean(as_user(user, build_and_wipe, scratch, outside))
    assert_outside_intact(outside)
    assert os.path.isdir("/usr/lib")


@pytest.mark.parametrize("user", USERS)
def test_fifo_socket_and_a_file_with_no_permissions(scratch, user):
    def build_and_wipe(top):
        sub = os.path.join(top, "sub")
        os.mkdir(sub)
        for d in (top, sub):
            os.mkfifo(os.path.join(d, "fifo"))
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(os.path.join(d, "sock"))  # short path: /dev/shm/itercode-wipe-XXXX/sub/sock
            listener.listen(1)
            listener.close()  # the socket file stays behind
            Path(d, "secret").write_text("x")
            os.chmod(os.path.join(d, "secret"), 0)
            for odd in (b"\xff\xfe not utf-8", b"new\nline", b"-rf"):  # names as a run may pick them
                os.close(os.open(os.path.join(os.fsencode(d), odd), os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(sub, 0)
        return wipe_report(top)

    assert_clean(as_user(user, build_and_wipe, scratch))


@pytest.mark.parametrize("user", USERS)
def test_the_top_dir_keeps_its_own_mode(scratch, user):
    def build_and_wipe(top):
        Path(top, "f").write_text("x")
        os.mkdir(os.path.join(top, "d"))
        os.chmod(top, 0o500)  # the wipe must add u+w to empty it, then put the mode back
        report = wipe_report(top)
        report["mode"] = os.stat(top).st_mode & 0o7777
        os.chmod(top, 0o700)
        return report

    report = as_user(user, build_and_wipe, scratch)
    assert_clean(report)
    assert report["mode"] == 0o500


def test_deep_tree_within_a_tight_file_descriptor_limit(scratch):
    """The walk holds at most MAX_OPEN_FDS directory fds, however deep the tree."""
    def build_and_wipe(top):
        deep_chain(top, 5_000)
        in_use = len(os.listdir("/proc/self/fd"))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + MAX_OPEN_FDS + 4, hard))
        try:
            return wipe_report(top)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert_clean(build_and_wipe(scratch))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make files the unprivileged uid cannot remove")
def test_what_cannot_be_removed_is_reported_not_raised(scratch):
    """A root-owned directory deep inside: the unprivileged wipe removes
    everything else, reports that one file once (not each ancestor), and raises nothing."""
    deep_chain(scratch, 50)
    bottom = os.path.join(scratch, *["d"] * 50)
    os.mkdir(os.path.join(bottom, "roots"))
    Path(bottom, "roots", "file").write_text("x")
    Path(scratch, "mine").write_text("x")
    for dirpath, dirnames, filenames in os.walk(scratch):
        if "roots" not in dirpath:
            for name in dirnames + filenames:
                if name != "roots":
                    os.chown(os.path.join(dirpath, name), NOBODY, NOBODY)
    report = as_user("nobody", wipe_report, scratch)
    assert len(report["failed"]) == 1, report["failed"]
    assert report["failed"][0].endswith("roots/file (Permission denied)")
    assert "more levels" in report["failed"][0]  # a deep path is shortened
    assert report["left"] == ["d"] and not report["empty"]
    assert not os.path.exists(os.path.join(scratch, "mine"))
    shutil.rmtree(os.path.join(bottom, "roots"))


def test_remove_tree_unlinks_a_symlink_put_in_place_of_the_dir(scratch, outside):
    link = Path(scratch, "workdir")
    link.symlink_to(outside)
    assert remove_tree(str(link)) == []
    assert not os.path.lexists(link)
    assert_outside_intact(outside)
    real = Path(scratch, "real")
    real.mkdir()
    deep_chain(str(real), 3000)
    assert remove_tree(str(real)) == [] and not os.path.lexists(real)


def test_the_container_servers_wipe_never_raises(scratch, monkeypatch):
    """The Docker backend's PID 1 wipes with the same code; whatever goes
    wrong is a "not wiped" line (a dirty container), never an exception. A
    path with a NUL byte makes empty_dir itself raise (ValueError)."""
    saved = list(sys.path)
    try:
        server = importlib.import_module("sandbox.container_server")
    finally:
        sys.path[:] = saved  # it puts sandbox/ first, for its own harness import
    deep_chain(scratch, 3000, every=50)
    monkeypatch.setattr(server, "WIPE_DIRS", (scratch, "/bad\0path", os.path.join(scratch, "missing")))
    failed = server.wipe()
    assert len(failed) == 1 and "the wipe failed: ValueError" in failed[0], failed
    assert os.listdir(scratch) == []


# --------------------------------------------------------------------------- end to end

LIMITS = Limits(timeout_s=12, memory_mb=512, max_processes=32, max_file_mb=16, max_open_files=64, max_output_kb=16)

# The run builds its tree in every writable place it has: its work dir,
# /tmp and /dev/shm (in Docker /work/run, /tmp, /dev/shm; in the process
# backend the work dir is /tmp). The tmpfs caps (process backend: 8192 inodes)
# and a time budget bound each part; the tests then check it got far enough.
HOSTILE = """
import os, socket, time

KIND = {kind!r}
OUTSIDE = {outside!r}


def specials(where):
    # A file with no permissions, a fifo, a unix socket, symlinks out and a
    # locked directory with a file in it, in ``where``.
    made = 0
    steps = [
        lambda: os.close(os.open(os.path.join(where, 'noperm'), os.O_CREAT | os.O_WRONLY, 0)),
        lambda: os.mkfifo(os.path.join(where, 'fifo')),
        lambda: socket.socket(socket.AF_UNIX).bind(os.path.join(where, 'sock')),
        lambda: os.symlink(OUTSIDE, os.path.join(where, 'out')),
        lambda: os.symlink('/', os.path.join(where, 'root')),
        lambda: os.mkdir(os.path.join(where, 'locked')),
        lambda: open(os.path.join(where, 'locked', 'f'), 'w').close(),
        lambda: os.chmod(os.path.join(where, 'locked'), 0),
    ]
    for step in steps:
        try:
            step()
            made += 1
        except OSError:
            pass
    return made


def deep(top, cap, seconds, lock_every):
    # mkdir + chdir as deep as the inode cap, the depth cap and the time allow,
    # then back up, leaving every lock_every-th level mode 000 or 0o200.
    os.chdir(top)
    end = time.monotonic() + seconds
    depth = 0
    try:
        while depth < cap and time.monotonic() < end:
            os.mkdir('d')
            os.chdir('d')
            depth += 1
    except OSError:
        pass
    specials('.')
    for level in range(depth):
        os.chdir('..')
        if lock_every and level % lock_every == 0:
            os.chmod('d', 0o000 if level % (2 * lock_every) else 0o200)
    return depth


def wide(top, cap, seconds):
    # One directory with as many files as the caps and the time allow, left read-only.
    where = os.path.join(top, 'wide')
    end = time.monotonic() + seconds
    n = 0
    try:
        os.mkdir(where)
        while n < cap and time.monotonic() < end:
            os.close(os.open(os.path.join(where, str(n)), os.O_CREAT | os.O_WRONLY, 0o600))
            n += 1
    except OSError:
        pass
    try:
        os.chmod(where, 0o500)
    except OSError:
        pass
    return n


def f():
    home = os.getcwd()
    tops = [home] + [d for d in ('/tmp', '/dev/shm') if os.path.isdir(d) and os.path.realpath(d) != home]
    made = {{'deep': 0, 'wide': 0, 'specials': 0}}
    for top in tops:
        if KIND == 'deep':
            made['deep'] = max(made['deep'], deep(top, 30000, 2.0, 0))
        elif KIND == 'wide':
            made['wide'] = max(made['wide'], wide(top, 50000, 2.0))
        else:  # unwritable: locked levels, special files, and the tops themselves locked
            made['deep'] = max(made['deep'], deep(top, 3000, 1.0, 97))
            made['wide'] = max(made['wide'], wide(top, 3000, 1.0))
            made['specials'] += specials(top)
    os.chdir('/')
    for top in tops:
        try:
            os.chmod(top, 0)  # only where the run owns its top (the process backend's /tmp)
        except OSError:
            pass
    return made
"""

# What each kind of tree must at least have reached for the test to mean something.
ENOUGH = {"deep": "r['deep'] >= 5000", "wide": "r['wide'] >= 5000",
          "unwritable": "r['deep'] >= 1000 and r['wide'] >= 1000 and r['specials'] >= 10"}

CANONICAL = Job(
    job_id="canonical",
    program="def add(a, b):\n    return a + b\n",
    tests="assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add('a', 'b') == 'ab'\n",
    entry_point="add",
)

CANARY = Job(
    job_id="canary",
    program="import time\n\ndef add(a, b):\n    time.sleep(0.2)\n    return a + b\n",
    tests=CANONICAL.tests,
    entry_point="add",
)

# The next run finds its work dir, /tmp and /dev/shm empty, and writable.
LOOK = Job(
    job_id="look",
    program=textwrap.dedent("""
    import os
    def f():
        seen = {name: sorted(os.listdir(name)) for name in ('.', '/tmp', '/dev/shm')}
        for name in ('.', '/tmp', '/dev/shm'):
            path = os.path.join(name, 'probe')
            with open(path, 'w') as fh:
                fh.write('the next run can write here')
            os.unlink(path)
        return seen
    """),
    tests="r = f()\nassert r == {'.': [], '/tmp': [], '/dev/shm': []}, r\n",
    entry_point="f",
)

KINDS = ["deep", "wide", "unwritable"]
BACKENDS = ["process", pytest.param("docker", marks=pytest.mark.docker), pytest.param("ray", marks=pytest.mark.ray)]


def hostile(kind: str, outside: str, job_id: str = "hostile") -> Job:
    return Job(job_id=job_id, program=HOSTILE.format(kind=kind, outside=outside),
               tests=f"r = f()\nassert {ENOUGH[kind]}, r\n", entry_point="f")


_RAY_OPEN: list = []  # the ray executor of this module still open (the cluster has 2 CPUs: one at a time)


def _executor(request, workers: int):
    """The backend ``request.param`` (ray: ``workers`` one-worker actors on the session's cluster)."""
    if request.param == "docker":
        require_docker()
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
        # pytest keeps `single` open while `pair` starts; `single`'s tests are done by
        # then, so close it, or `pair` would find one free CPU, not two.
        while _RAY_OPEN:
            _RAY_OPEN.pop().close()
        executor = make_executor("ray", workers=workers)
        assert executor.workers == workers
        _RAY_OPEN.append(executor)
        return executor
    return make_executor(request.param, workers=workers)


@pytest.fixture(scope="module", params=BACKENDS)
def single(request):
    """One worker: every job of a batch runs on the same worker, one after the other."""
    executor = _executor(request, 1)
    yield executor
    executor.close()


@pytest.fixture(scope="module", params=BACKENDS)
def pair(request):
    """Two workers: the hostile run beside a concurrent canary."""
    executor = _executor(request, 2)
    yield executor
    executor.close()


@pytest.fixture
def victim():
    """A host directory the runs' symlinks point at: it must survive every wipe."""
    path = Path("/var/tmp") / f"itercode-wipe-victim-{uuid.uuid4().hex}"
    path.mkdir()
    (path / "keep.txt").write_text("keep")
    yield str(path)
    shutil.rmtree(path)


def _assert_passed(verdict, what: str) -> None:
    assert verdict.status == PASSED, f"{what}: got {verdict.status}\n{verdict.stderr[:2000]}"


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_tree_then_canonical_on_the_same_worker(single, kind, victim):
    _assert_passed(single.run([hostile(kind, victim)], LIMITS)[0], f"the {kind} tree was not built")
    _assert_passed(single.run([CANONICAL], LIMITS)[0], "the canonical solution after it")
    _assert_passed(single.run([LOOK], LIMITS)[0], "the next run's directories")
    assert_outside_intact(victim)


@pytest.mark.parametrize("kind", KINDS)
def test_hostile_tree_beside_a_canary(pair, kind, victim):
    verdicts = pair.run([hostile(kind, victim), CANARY], LIMITS)
    _assert_passed(verdicts[0], f"the {kind} tree was not built")
    _assert_passed(verdicts[1], "the concurrent canary")
    for v in pair.run([CANONICAL, CANONICAL], LIMITS):
        _assert_passed(v, "a canonical solution after it")
    for v in pair.run([LOOK, LOOK], LIMITS):
        _assert_passed(v, "the next runs' directories")
    assert_outside_intact(victim)
