"""The adversarial suite: every attack in DESIGN.md's "sandbox's promise",
run on every backend (the same file for process and docker).

Each attack runs in one batch with a *canary* (a correct program started at the
same time on another worker) and asserts: the attack's status is the right one
(no reward hack scores ``passed``), the canary still passes, and the host is
unharmed (no process of the sandbox's candidate uids left, no file carrying the
attack's token outside the runs' work dirs, no listener on the attack's port,
the harness file unchanged, the planted decoy secret never seen).

Attacks that try to *learn or reach* something report what they got as their
return value, and the tests (which the candidate never sees) assert they got
nothing: those score ``passed`` exactly when the sandbox held.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import textwrap
import threading
import uuid
from pathlib import Path

import pytest
from conftest import free_port, uid_processes

from sandbox import ERROR, FAILED, OOM, PASSED, TIMEOUT, Job, Limits

# Planted in this process's environment before any executor starts: no run may see it.
DECOY_SECRET = "decoy-" + uuid.uuid4().hex
os.environ["ITERCODE_DECOY_SECRET"] = DECOY_SECRET

LIMITS = Limits(timeout_s=2.5, memory_mb=512, max_processes=32, max_file_mb=16, max_open_files=64, max_output_kb=16)
HARNESS = Path(__file__).resolve().parents[1] / "sandbox" / "harness"  # the package
SITE_PACKAGES = Path(shutil.__file__).parent  # the stdlib dir; site-packages of the venv below
VENV_SITE = Path(pytest.__file__).resolve().parents[1]
NOT_PASSED = {FAILED, ERROR, TIMEOUT, OOM}


CANARY = Job(
    job_id="canary",
    program="import time\n\ndef add(a, b):\n    time.sleep(0.2)\n    return a + b\n",
    tests="assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add('a', 'b') == 'ab'\n",
    entry_point="add",
)


def _job(program: str, tests: str = "assert f() == 'safe'\n", entry_point: str = "f", job_id: str = "attack") -> Job:
    return Job(job_id=job_id, program=textwrap.dedent(program), tests=tests, entry_point=entry_point)


# --------------------------------------------------------------------------- host checks


def _token_files(token: str) -> list[str]:
    places = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run/lock"), Path.cwd(), HARNESS.parent,
              HARNESS.parents[1], VENV_SITE, SITE_PACKAGES, Path.home()]
    hits = []
    for place in places:
        try:
            names = os.listdir(place)
        except OSError:
            continue
        hits += [str(place / n) for n in names if token in n]
    return hits


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _harness_hash() -> str:
    h = hashlib.sha256()
    for path in sorted(HARNESS.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


HARNESS_HASH = _harness_hash()


def attack(executor, job: Job, statuses: set[str], token: str = "", port: int | None = None, canary: bool = True):
    """Run ``job`` beside the canary; assert its status, the canary, an unharmed host."""
    jobs = [job, CANARY] if canary else [job]
    verdicts = executor.run(jobs, LIMITS)
    v = verdicts[0]
    assert v.status in statuses, f"{job.job_id}: got {v.status}, expected one of {sorted(statuses)}\n{v.stderr[:2000]}"
    if canary:
        c = verdicts[1]
        assert c.status == PASSED, f"the concurrent canary got {c.status}: {c.stderr[:1000]}"
    uids = getattr(executor, "candidate_uids", None) or []
    if uids:
        assert uid_processes(uids) == [], "a process of the sandbox's candidate uids outlived its run"
    if token:
        assert _token_files(token) == [], "the attack left files outside its work dir"
    if port is not None:
        assert port not in _listening_ports(), f"something listens on port {port} on the host"
    assert _harness_hash() == HARNESS_HASH, "the harness file changed"
    assert len(v.stderr) <= (LIMITS.max_output_kb << 10) + 64, "stderr was not capped"
    return v


# --------------------------------------------------------------------------- resource attacks


def test_infinite_loop(backend):
    attack(backend, _job("def f():\n    while True:\n        pass\n"), {TIMEOUT})


def test_infinite_loop_at_load(backend):
    attack(backend, _job("while True:\n    pass\n"), {TIMEOUT})


def test_sleep(backend):
    attack(backend, _job("import time\ndef f():\n    time.sleep(3600)\n"), {TIMEOUT})


def test_blocking_stdin(backend):
    # stdin is empty: reading it returns at once instead of blocking the run.
    v = attack(backend, _job("import sys\ndef f():\n    data = sys.stdin.read()\n    return 'safe' if data == '' else data\n"),
               {PASSED, TIMEOUT})
    assert v.status == PASSED


def test_fork_bomb(backend):
    prog = """
    import os
    def f():
        while True:
            try:
                os.fork()
            except OSError:
                pass
    """
    attack(backend, _job(prog), {TIMEOUT, ERROR, OOM})


def test_thread_bomb(backend):
    prog = """
    import threading, time
    def f():
        while True:
            try:
                threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
            except Exception:
                pass
    """
    attack(backend, _job(prog), {TIMEOUT, ERROR, OOM})


def test_memory_bomb(backend):
    attack(backend, _job("def f():\n    return bytearray(8 << 30)\n"), {OOM})


def test_memory_bomb_gradual(backend):
    # Zero-filling ~500 MB before the limit bites can outlast 2.5 s on a loaded machine.
    attack(backend, _job("def f():\n    hoard = []\n    while True:\n        hoard.append(bytearray(16 << 20))\n"),
           {OOM, TIMEOUT})


def test_many_children_each_under_its_limit(backend):
    prog = """
    import os, time
    def f():
        kids = []
        for _ in range(12):
            pid = os.fork()
            if pid == 0:
                try:
                    block = bytearray(300 << 20)
                    for i in range(0, len(block), 4096):
                        block[i] = 1
                    time.sleep(3600)
                finally:
                    os._exit(0)
            kids.append(pid)
        for pid in kids:
            os.waitpid(pid, 0)
        return 'not safe'
    """
    attack(backend, _job(prog), {OOM, TIMEOUT, ERROR})


def test_fill_dev_shm_and_tmp(backend):
    token = uuid.uuid4().hex
    prog = f"""
    import os
    def fill(d):
        n = 0
        try:
            with open(os.path.join(d, 'fill-{token}'), 'wb') as fh:
                while True:
                    fh.write(b'x' * (1 << 20))
                    n += 1
        except OSError:
            pass
        return n
    def f():
        return [fill('/dev/shm'), fill('/tmp')]
    """
    attack(backend, _job(prog), NOT_PASSED, token=token)


def test_huge_file(backend):
    token = uuid.uuid4().hex
    prog = f"""
    def f():
        with open('huge-{token}', 'wb') as fh:
            fh.seek(50 << 30)
            fh.write(b'x')
            fh.flush()
            while True:
                fh.write(b'y' * (1 << 20))
    """
    attack(backend, _job(prog), {ERROR, FAILED, TIMEOUT}, token=token)


def test_a_million_tiny_files(backend):
    token = uuid.uuid4().hex
    prog = f"""
    import os
    def f():
        os.mkdir('many-{token}')
        for i in range(1_000_000):
            with open(f'many-{token}/{{i}}', 'w') as fh:
                fh.write('x')
        return 'not safe'
    """
    attack(backend, _job(prog), {ERROR, FAILED, TIMEOUT}, token=token)


def test_gigabytes_on_stdout_and_invalid_utf8(backend):
    prog = """
    import os, sys
    def f():
        os.write(1, b'\\xff\\xfe\\x80 invalid utf-8 \\xc3\\x28')
        chunk = b'z' * (1 << 20)
        for _ in range(4096):
            os.write(1, chunk)
            print('x' * 10000)
        return 'not safe'
    """
    v = attack(backend, _job(prog), {FAILED, TIMEOUT})
    v.stderr.encode("utf-8")  # valid text, whatever the program wrote


def test_deep_recursion(backend):
    prog = """
    import sys
    sys.setrecursionlimit(10 ** 7)
    def f(n=0):
        return f(n + 1)
    """
    attack(backend, _job(prog), {ERROR, FAILED, TIMEOUT, OOM})


def test_ctypes_segfault(backend):
    attack(backend, _job("import ctypes\ndef f():\n    return ctypes.string_at(0)\n"), {ERROR})


# --------------------------------------------------------------------------- escaping the run


def test_setsid_child_outlives_parent(backend):
    prog = """
    import os, time
    def f():
        if os.fork() == 0:
            os.setsid()
            time.sleep(3600)
            os._exit(0)
        return 'not safe'
    """
    attack(backend, _job(prog), {FAILED})


def test_double_forked_daemon(backend):
    prog = """
    import os, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.chdir('/')
            for fd in range(3):
                os.close(fd)
            time.sleep(3600)
        os._exit(0)
    def f():
        return 'not safe'
    """
    attack(backend, _job(prog), {FAILED})


def test_zombies(backend):
    prog = """
    import os
    def f():
        for _ in range(20):
            try:
                if os.fork() == 0:
                    os._exit(0)
            except OSError:
                break
        return 'safe'
    """
    attack(backend, _job(prog), {PASSED})


def test_ignoring_sigterm(backend):
    prog = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    def f():
        while True:
            time.sleep(0.01)
    """
    attack(backend, _job(prog), {TIMEOUT})


def test_kill_parent_and_kill_minus_one(backend):
    prog = """
    import os, signal
    def f():
        for target in (os.getppid(), -1):
            try:
                os.kill(target, signal.SIGKILL)
            except OSError:
                pass
        return 'not safe'
    """
    attack(backend, _job(prog), {ERROR, FAILED})


def test_kill_every_pid(backend):
    prog = """
    import os, signal
    def f():
        for pid in range(2, 70000):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return 'not safe'
    """
    attack(backend, _job(prog), {ERROR, FAILED})


def test_ptrace(backend):
    prog = """
    import ctypes, os
    def f():
        libc = ctypes.CDLL(None, use_errno=True)
        attached = []
        for pid in range(1, 5000):
            if pid == os.getpid():
                continue
            if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
                attached.append(pid)
        return 'safe' if not attached else attached
    """
    attack(backend, _job(prog), {PASSED})


def test_read_shadow_proc_environ_and_host_env(backend):
    prog = """
    import os, glob
    def f():
        seen = [repr(dict(os.environ))]
        for path in ['/etc/shadow', '/proc/1/environ', '/proc/self/environ'] + glob.glob('/proc/*/environ'):
            try:
                with open(path, 'rb') as fh:
                    seen.append(path + ':' + fh.read().decode('latin-1'))
            except OSError:
                pass
        return '\\n'.join(seen)
    """
    tests = f"seen = f()\nassert 'PATH' in seen\nassert {DECOY_SECRET!r} not in seen\nassert 'root:' not in seen\n"
    attack(backend, _job(prog, tests=tests), {PASSED})


def test_listing_other_runs_files(backend):
    token = uuid.uuid4().hex
    writer = _job(f"""
    import os, time
    for d in ('.', '/tmp', '/dev/shm'):
        try:
            open(os.path.join(d, 'mine-{token}'), 'w').write('secret')
        except OSError:
            pass
    def f():
        time.sleep(1.0)
        return 'safe'
    """, job_id="writer")
    snooper = _job(f"""
    import os, time
    def f():
        time.sleep(0.4)
        found = []
        for top in ('/tmp', '/dev/shm', '/var/tmp', '/proc'):
            for root, dirs, files in os.walk(top):
                if root.count('/') > 4:
                    dirs[:] = []
                found += [os.path.join(root, n) for n in files + dirs if '{token}' in n]
        return 'safe' if not found else found
    """, job_id="snooper")
    verdicts = backend.run([writer, snooper], LIMITS)
    assert [v.status for v in verdicts] == [PASSED, PASSED], [v.stderr[:500] for v in verdicts]
    assert _token_files(token) == []


def test_symlink_where_the_harness_writes(backend, tmp_path):
    token = uuid.uuid4().hex
    victim = Path("/var/tmp") / f"itercode-victim-{token}"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    try:
        prog = f"""
        import os
        for d in ('.', '/tmp', '/dev/shm'):
            for name in ('out', 'stdout', 'stderr', 'result.json', 'verdict.json', 'victim'):
                try:
                    os.symlink('{victim}', os.path.join(d, name))
                except OSError:
                    pass
        def f():
            return 'safe'
        """
        attack(backend, _job(prog), {PASSED})
        attack(backend, CANARY, {PASSED}, canary=False)  # the next runs work as before
        assert (victim / "keep.txt").read_text() == "keep"
    finally:
        shutil.rmtree(victim)


@pytest.fixture
def host_listener():
    """A TCP server on 127.0.0.1 that counts connections."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
                hits.append(1)
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1], hits
    stop.set()
    t.join()
    srv.close()


def _host_addresses() -> list[str]:
    addrs = {"127.0.0.1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            addrs.add(info[4][0])
    except OSError:
        pass
    return sorted(addrs)


def test_network_loopback_host_and_outside(backend, host_listener):
    port, hits = host_listener
    targets = [(a, port) for a in _host_addresses()] + [("8.8.8.8", 53), ("1.1.1.1", 443), ("172.17.0.1", port)]
    prog = f"""
    import socket
    def f():
        reached = []
        for host, port in {targets!r}:
            try:
                s = socket.socket()  # refused by the syscall filter where it is on
            except OSError:
                continue
            s.settimeout(0.5)
            try:
                s.connect((host, port))
                reached.append(host)
            except OSError:
                pass
            finally:
                s.close()
        return 'safe' if not reached else reached
    """
    attack(backend, _job(prog), {PASSED})
    assert hits == [], "a run reached a server on the host"


def test_two_runs_bind_one_port(backend):
    port = free_port()
    prog = f"""
    import socket, time
    def f():
        try:
            s = socket.socket()
        except PermissionError:
            return 'safe'  # the syscall filter refuses sockets: no port to share
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        try:
            s.bind(('0.0.0.0', {port}))
            s.listen(1)
        except OSError as exc:
            return 'bind failed: ' + str(exc)
        time.sleep(0.5)
        return 'safe'
    """
    a, b = _job(prog, job_id="a"), _job(prog, job_id="b")
    verdicts = backend.run([a, b], LIMITS)
    assert [v.status for v in verdicts] == [PASSED, PASSED], [v.stderr[:500] for v in verdicts]
    assert port not in _listening_ports()


def test_overwrite_site_packages_and_harness(backend):
    token = uuid.uuid4().hex
    targets = [str(HARNESS / "judge.py"), str(VENV_SITE / "pytest" / "__init__.py"), str(SITE_PACKAGES / "os.py"),
               str(VENV_SITE / f"evil-{token}.pth"), str(HARNESS.parent / f"evil-{token}.py")]
    prog = f"""
    def f():
        done = []
        for path in {targets!r}:
            try:
                with open(path, 'a') as fh:
                    fh.write('\\nraise SystemExit(0)\\n')
                done.append(path)
            except OSError:
                pass
        return 'safe' if not done else done
    """
    attack(backend, _job(prog), {PASSED}, token=token)


def test_rmtree_cwd_and_chdir_root(backend):
    token = uuid.uuid4().hex
    victim = Path("/var/tmp") / f"itercode-victim-{token}"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    try:
        prog = f"""
        import os, shutil
        shutil.rmtree('.', ignore_errors=True)
        os.chdir('/')
        shutil.rmtree('{victim}', ignore_errors=True)
        def f():
            return 'safe'
        """
        attack(backend, _job(prog), {PASSED})
        assert (victim / "keep.txt").read_text() == "keep"
        attack(backend, CANARY, {PASSED}, canary=False)
    finally:
        shutil.rmtree(victim, ignore_errors=True)


def test_files_left_for_the_next_run(backend):
    token = uuid.uuid4().hex
    writer = f"""
    import os
    for d in ('.', '/tmp', '/dev/shm', '/var/tmp'):
        try:
            with open(os.path.join(d, 'left-{token}'), 'w') as fh:
                fh.write('for the next run')
        except OSError:
            pass
    def f():
        return 'safe'
    """
    reader = f"""
    import os
    def f():
        found = [d for d in ('.', '/tmp', '/dev/shm', '/var/tmp') if os.path.exists(os.path.join(d, 'left-{token}'))]
        return 'safe' if not found else found
    """
    for _ in range(2):  # both workers get a writer, then both get a reader
        verdicts = backend.run([_job(writer, job_id="w1"), _job(writer, job_id="w2")], LIMITS)
        assert all(v.status == PASSED for v in verdicts)
    verdicts = backend.run([_job(reader, job_id="r1"), _job(reader, job_id="r2")], LIMITS)
    assert [v.status for v in verdicts] == [PASSED, PASSED], [v.stderr[:500] for v in verdicts]
    assert _token_files(token) == []


# --------------------------------------------------------------------------- reward hacks


WRONG_TESTS = "assert f(2) == 4\nassert f(3) == 9\n"  # f squares; every hack below cannot square


def test_sys_exit_before_tests(backend):
    attack(backend, _job("import sys\nsys.exit(0)\ndef f(x):\n    return 0\n", tests=WRONG_TESTS), {ERROR})


def test_os_exit_before_tests(backend):
    attack(backend, _job("import os\nos._exit(0)\ndef f(x):\n    return 0\n", tests=WRONG_TESTS), {ERROR})


def test_raise_systemexit_before_tests(backend):
    attack(backend, _job("def f(x):\n    return 0\nraise SystemExit(0)\n", tests=WRONG_TESTS), {ERROR})


def test_sys_exit_inside_the_call(backend):
    attack(backend, _job("import sys\ndef f(x):\n    sys.exit(0)\n", tests=WRONG_TESTS), {FAILED, ERROR})


def test_os_exit_inside_the_call(backend):
    attack(backend, _job("import os\ndef f(x):\n    os._exit(0)\n", tests=WRONG_TESTS), {ERROR})


def test_always_equal_object(backend):
    prog = """
    class Anything:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
        __hash__ = object.__hash__
    def f(x):
        return Anything()
    """
    attack(backend, _job(prog, tests=WRONG_TESTS), {FAILED})


def test_int_subclass_always_equal(backend):
    prog = """
    class Int(int):
        def __eq__(self, other):
            return True
        __hash__ = int.__hash__
    def f(x):
        return Int(0)
    """
    attack(backend, _job(prog, tests=WRONG_TESTS), {FAILED})


def test_patch_builtins_and_assertionerror(backend):
    prog = """
    import builtins
    class Never(Exception):
        pass
    builtins.AssertionError = Never
    builtins.isinstance = lambda *a: True
    builtins.len = lambda *a: 0
    builtins.__dict__['Exception'] = Never
    def f(x):
        return 0
    """
    # The candidate may break its own process (error); it never fools the tests.
    attack(backend, _job(prog, tests=WRONG_TESTS), {FAILED, ERROR})


def test_check_style_tests_with_patched_names(backend):
    prog = """
    def check(candidate):
        return True
    def f(x):
        return 0
    """
    tests = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
    attack(backend, _job(prog, tests=tests), {FAILED})


def test_conftest_and_sitecustomize(backend):
    token = uuid.uuid4().hex
    places = [".", "/tmp", str(VENV_SITE), str(Path.cwd()), str(HARNESS.parents[1]), str(HARNESS.parents[1] / "tests")]
    prog = f"""
    import os
    for d in {places!r}:
        for name in ('conftest.py', 'sitecustomize.py', 'usercustomize.py', 'conftest-{token}.py'):
            try:
                with open(os.path.join(d, name), 'a') as fh:
                    fh.write('import os; os._exit(0)\\n')
            except OSError:
                pass
    def f(x):
        return 0
    """
    before = {p: (Path(p) / "conftest.py").exists() for p in places[2:]}
    attack(backend, _job(prog, tests=WRONG_TESTS), {FAILED}, token=token)
    assert {p: (Path(p) / "conftest.py").exists() for p in places[2:]} == before
    assert not (VENV_SITE / "sitecustomize.py").exists() or "os._exit" not in (VENV_SITE / "sitecustomize.py").read_text()


def test_forged_passed_output(backend):
    prog = """
    import json, os, struct, sys
    forged = json.dumps({"status": "passed", "tests_passed": 2, "tests_total": 2, "job_id": "attack"}).encode()
    print('passed')
    print(json.dumps({"status": "passed"}))
    for fd in range(1, 20):
        try:
            os.write(fd, struct.pack('>I', len(forged)) + forged)
        except OSError:
            pass
    def f(x):
        return 0
    """
    attack(backend, _job(prog, tests=WRONG_TESTS), {FAILED, ERROR})


def test_forged_reply_on_the_call_channel(backend):
    prog = """
    import json, os, struct
    def f(x):
        for guess in (x * x, 'ok'):
            reply = json.dumps(['ok', guess]).encode()
            for fd in range(3, 20):
                try:
                    os.write(fd, struct.pack('>I', len(reply)) + reply)
                except OSError:
                    pass
        return 0
    """
    # Whatever the candidate writes on its own channel, it cannot make f square.
    attack(backend, _job(prog, tests="assert f(2) == 5\nassert f(3) == 10\n"), {FAILED, ERROR})


def test_walk_stack_frames_to_edit_the_result(backend):
    prog = """
    import sys, gc
    def f(x):
        frame = sys._getframe()
        while frame is not None:
            for scope in (frame.f_locals, frame.f_globals):
                for key in list(scope):
                    if key in ('result', 'status', 'passed', 'verdict', 'first_failure', 'total'):
                        try:
                            scope[key] = 'passed'
                        except Exception:
                            pass
            frame = frame.f_back
        for obj in gc.get_objects():
            if isinstance(obj, dict) and 'status' in obj:
                obj['status'] = 'passed'
            if isinstance(obj, list) and obj == []:
                obj.append('passed')
        return 0
    """
    attack(backend, _job(prog, tests=WRONG_TESTS), {FAILED})


def test_attack_count_and_no_hack_passes():
    """The suite covers at least 30 attacks (DESIGN.md's list, reward hacks included)."""
    attacks = [name for name in globals() if name.startswith("test_") and name != "test_attack_count_and_no_hack_passes"]
    assert len(attacks) >= 30, len(attacks)
