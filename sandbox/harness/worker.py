"""The warm worker: isolates itself once, keeps a long-lived judge and a
candidate zygote, and runs one job at a time, judging it with the candidate
in another process. Speaks length-prefixed JSON frames with the host: one
ready frame, then a verdict frame per job frame.

    python -I -c 'import sys; sys.path.insert(0, SANDBOX_DIR); from harness.worker import main; main()' --config '{...}'
"""
from __future__ import annotations

import gc
import json
import math
import os
import resource
import select
import signal
import socket
import sys
import time

from .candidate import _CappedStream, candidate_main
from .judge import ERROR, INFRA_ERROR, OOM, PASSED, TIMEOUT, judge_serve
from .kernel import (CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
                     MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_REC, PR_SET_DUMPABLE,
                     PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, close_fds_except, flush_stdio, libc, mount,
                     mount_setattr_recursive, move_fds, prctl, set_rlimit, setns, unshare)
from .wire import MAX_CONTROL_FRAME, FrameTooLarge, read_frame, write_frame

HARNESS_VERSION = "2"
SETUP_FAILED = 121  # exit code of a candidate process whose isolation setup failed


SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Modules most candidate programs import, loaded once in the warm worker so a
# run's `import` costs nothing (children inherit them through fork). Kept
# short on purpose: every extra module makes each fork and each run's
# copy-on-write faults dearer (measured: the longer list with decimal,
# hashlib, datetime, unicodedata... cost ~10% more CPU per run); the rest are
# imported from disk by the runs that need them.
# (Not `random`: its at-fork hook reseeds in every child, ~40 page faults and
# ~0.15 ms per run; programs that want it import it.)
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "copy", "operator", "resource", "fcntl", "socket")


class Worker:
    """One warm worker slot: isolates itself once, keeps a long-lived judge
    process, and forks a fresh, isolated candidate per job. ``config`` keys
    (all optional):

    slot (int), candidate_uid / judge_uid (int, used when running as root),
    namespaces ("auto" | "on" | "off"), cgroup_name (str: cgroup v1 group
    under memory/ and pids/ to create for this slot, "" for none),
    tmpfs_mb (size of the private /tmp and /dev/shm each).
    """

    def __init__(self, config: dict):
        self.config = config
        self.slot = int(config.get("slot", 0))
        self.is_root = os.geteuid() == 0
        self.candidate_uid = int(config.get("candidate_uid", 65534)) if self.is_root else None
        self.judge_uid = int(config.get("judge_uid", 65533)) if self.is_root else None
        self.tmpfs_mb = int(config.get("tmpfs_mb", 64))
        self.notes: list[str] = []
        self.netns = self.mountns = self.pidns = self.readonly = False
        self.cgroups: dict[str, str] = {}
        self._pidns_fd = -1
        self._limits_key = None
        self.scratch: list[str] = []  # dirs wiped after every run
        self.judge_pid, self.judge_sock = -1, None
        mode = config.get("namespaces", "auto")
        if mode != "off":
            self._isolate_once(required=(mode == "on"))
        if config.get("cgroup_name"):
            self._make_cgroups(config["cgroup_name"])
        for name in PRELOAD:
            try:
                __import__(name)
            except ImportError:
                pass
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Work done once here rather than in every run: the environment is
        # scrubbed, the worker leads its own session (no controlling
        # terminal for any run), the libc entry points are resolved.
        os.environ.clear()
        os.environ.update(SAFE_ENV)
        if os.getsid(0) != os.getpid():
            try:
                os.setsid()
            except OSError:
                pass
        for name in ("unshare", "setns", "mount", "prctl", "syscall"):
            getattr(libc(), name)
        self._devnull = os.open("/dev/null", os.O_RDWR)
        # The run's stdout/stderr objects, made once: a fork gets its own copy.
        self._budget = [0]
        self._streams = (_CappedStream(1, self._budget), _CappedStream(2, self._budget))
        gc.collect()
        gc.freeze()  # keep the warm heap shared with forked children

    # -- one-time isolation ------------------------------------------------
    def _isolate_once(self, required: bool) -> None:
        try:
            unshare(CLONE_NEWNET)
            self.netns = True
        except OSError as exc:
            self._fail(required, f"no network namespace ({exc}); candidates keep the host network")
        try:
            unshare(CLONE_NEWNS)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            self.mountns = True
        except OSError as exc:
            self._fail(required, f"no mount namespace ({exc}); /tmp and /dev/shm are shared with the host")
        if self.mountns:
            try:
                self._expose_interpreter()
            except OSError as exc:
                self.notes.append(f"could not expose the interpreter to the run's uid ({exc})")
            try:
                mount_setattr_recursive("/", attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
                self.readonly = True
            except OSError as exc:
                self._fail(False, f"could not make the host's mounts read-only ({exc})")
            if self.readonly and os.path.isdir("/sys/fs/cgroup"):
                try:  # the worker still attaches runs to its cgroups
                    mount_setattr_recursive("/sys/fs/cgroup", attr_clr=MOUNT_ATTR_RDONLY)
                except OSError:
                    pass
            # The candidates' /tmp (their work dir) and /dev/shm: private to this
            # worker, size- and inode-capped, wiped after every run. A proc
            # instance with hidepid=2 shows each uid only its own processes.
            owner = "mode=1777" if self.candidate_uid is None else f"mode=0700,uid={self.candidate_uid},gid={self.candidate_uid}"
            opts = f"size={self.tmpfs_mb}m,nr_inodes=8192,{owner}"
            try:
                mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
                self.scratch = ["/tmp"]
                if os.path.isdir("/dev/shm"):
                    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
                    self.scratch.append("/dev/shm")
            except OSError as exc:
                self._fail(required, f"no private /tmp ({exc})")
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
            except OSError as exc:
                self.notes.append(f"no private /proc ({exc}): runs can list the host's processes")
        try:
            self._pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            unshare(CLONE_NEWPID)
            setns(self._pidns_fd, CLONE_NEWPID)  # only probing; each run gets a fresh one
            self.pidns = self.mountns
        except OSError as exc:
            self._fail(required, f"no PID namespace ({exc}); a run's tree is killed by process group and cgroup only")

    def _expose_interpreter(self) -> None:
        """Let the unprivileged uids reach the interpreter's files.

        An interpreter under a directory others cannot enter (here
        /root/.pyenv under /root, mode 0700) would leave runs unable to import
        any module not preloaded. In this worker's mount namespace such a
        directory is replaced by an empty tmpfs (mode 0711) into which only
        the needed children are bind-mounted back, so the runs see the
        interpreter and nothing else of it (not root's other files)."""
        needed = {os.path.realpath(p) for p in [sys.base_prefix, sys.prefix, os.path.dirname(sys.executable), *sys.path]
                  if p and os.path.exists(p)}
        blocked: dict[str, set[str]] = {}
        for path in sorted(needed):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                ancestor = "/" + "/".join(parts[:i])
                if not os.stat(ancestor).st_mode & 0o001:
                    blocked.setdefault(ancestor, set()).add(parts[i])
                    break
        for ancestor, children in blocked.items():
            handles = {c: os.open(os.path.join(ancestor, c), os.O_PATH) for c in children}
            mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=1m")
            for child, fd in handles.items():
                os.mkdir(os.path.join(ancestor, child))
                mount(f"/proc/self/fd/{fd}", os.path.join(ancestor, child), None, MS_BIND | MS_REC)
                os.close(fd)
            self.notes.append(f"{ancestor} is hidden from runs except {sorted(children)}")

    def _fail(self, required: bool, note: str) -> None:
        if required:
            raise RuntimeError(note)
        self.notes.append(note)

    def _make_cgroups(self, name: str) -> None:
        """Make this slot's cgroups and move the worker into them, so every
        process it forks starts inside (no per-run attach, which is slow)."""
        for controller in ("memory", "pids"):
            path = f"/sys/fs/cgroup/{controller}/itercode/{name}"
            try:
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                self.cgroups[controller] = path
            except OSError as exc:
                self.notes.append(f"no {controller} cgroup ({exc})")
        if self.cgroups:
            try:  # the memory limit's OOM killer must pick the run, never the worker or the judge
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("-1000")
            except OSError:
                pass

    def close(self) -> None:
        """Stop the judge and remove this slot's cgroups (moving out first)."""
        self._stop_judge()
        for controller, path in self.cgroups.items():
            self._kill_cgroup(path)
            try:
                with open(f"/sys/fs/cgroup/{controller}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
                os.rmdir(path)
            except OSError:
                pass

    def _kill_cgroup(self, path: str) -> int:
        """SIGKILL whatever of a run is left in the slot's cgroup (not the worker or judge)."""
        killed = 0
        spare = {os.getpid(), self.judge_pid}
        for _ in range(50):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split() if int(p) not in spare]
            except OSError:
                return killed
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            time.sleep(0.01)
        return killed

    def _apply_cgroup_limits(self, limits: dict) -> None:
        key = (limits["memory_mb"], limits["max_processes"])
        if key == self._limits_key:
            return
        self._limits_key = key
        mem = self.cgroups.get("memory")
        if mem:
            # The candidate's address-space limit binds each process; the
            # cgroup binds the run as a whole (many children each under the
            # limit), with room for its two tmpfs mounts.
            total = (limits["memory_mb"] + 2 * self.tmpfs_mb + 64) << 20
            for fname in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                try:
                    with open(os.path.join(mem, fname), "w") as f:
                        f.write(str(total))
                except OSError:
                    pass
        pids = self.cgroups.get("pids")
        if pids:
            try:
                with open(os.path.join(pids, "pids.max"), "w") as f:
                    f.write(str(limits["max_processes"] + 2))
            except OSError:
                pass

    def _oom_kills(self) -> int:
        mem = self.cgroups.get("memory")
        if not mem:
            return 0
        try:
            with open(os.path.join(mem, "memory.oom_control")) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def describe(self) -> dict:
        return {"slot": self.slot, "pid": os.getpid(), "root": self.is_root, "netns": self.netns,
                "mountns": self.mountns, "pidns": self.pidns, "readonly_host": self.readonly,
                "cgroups": sorted(self.cgroups), "candidate_uid": self.candidate_uid,
                "judge_uid": self.judge_uid, "notes": self.notes, "version": HARNESS_VERSION}

    # -- the judge -----------------------------------------------------------
    def _start_judge(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        flush_stdio()
        pid = os.fork()
        if pid == 0:
            try:
                parent.close()
                os.chdir("/")
                if self.judge_uid is not None:
                    os.setgroups([])
                    os.setresgid(self.judge_uid, self.judge_uid, self.judge_uid)
                    os.setresuid(self.judge_uid, self.judge_uid, self.judge_uid)
                prctl(PR_SET_DUMPABLE, 0)  # nobody attaches to, or reads the memory of, the judge
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                set_rlimit(resource.RLIMIT_CORE, 0)
                set_rlimit(resource.RLIMIT_FSIZE, 1 << 20)
                set_rlimit(resource.RLIMIT_AS, 4 << 30)
                devnull = os.open("/dev/null", os.O_RDWR)
                move_fds({devnull: 0, child.fileno(): 3})
                os.dup2(0, 1)
                os.dup2(0, 2)
                close_fds_except({0, 1, 2, 3})
                judge_serve(socket.socket(fileno=3))
            finally:
                os._exit(0)
        child.close()
        self.judge_pid, self.judge_sock = pid, parent

    def _judge_gone(self) -> bool:
        try:
            pid, _ = os.waitpid(self.judge_pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0

    def _stop_judge(self) -> None:
        if self.judge_sock is not None:
            self.judge_sock.close()
            self.judge_sock = None
        if self.judge_pid > 0:
            try:
                os.kill(self.judge_pid, signal.SIGKILL)
            except OSError:
                pass
            self._reap(self.judge_pid)
            self.judge_pid = -1

    # -- per-run process setup ----------------------------------------------
    def _enter_candidate(self, limits: dict, out_w: int, req_r: int, resp_w: int) -> tuple[int, int]:
        """In the forked candidate (still root): finish isolation, drop to
        the slot's uid, arrange fds. Returns the call fds.

        Every line here runs once per run, in a fresh fork: it avoids
        `import` statements and new objects, since each page it touches
        is a copy-on-write fault (measured as the bulk of a run's cost)."""
        if self.pidns:
            unshare(CLONE_NEWIPC)  # SysV IPC objects die with the run
        else:
            os.setpgid(0, 0)  # without a PID namespace the run is killed by process group
        os.chdir(self._workdir)
        # fds first: F_DUPFD above 64 must happen before RLIMIT_NOFILE may drop below it.
        move_fds({self._devnull: 0, out_w: 1, req_r: 3, resp_w: 4})
        os.dup2(1, 2)
        os.closerange(5, 1 << 20)  # one close_range(2) call
        cpu = int(math.ceil(limits["timeout_s"])) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        set_rlimit(resource.RLIMIT_AS, limits["memory_mb"] << 20)
        set_rlimit(resource.RLIMIT_FSIZE, limits["max_file_mb"] << 20)
        set_rlimit(resource.RLIMIT_NOFILE, limits["max_open_files"])
        set_rlimit(resource.RLIMIT_CORE, 0)
        if self.cgroups:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")  # the run is what the memory limit's OOM killer takes
            os.close(fd)
        if self.candidate_uid is not None:
            os.setgroups([])
            os.setresgid(self.candidate_uid, self.candidate_uid, self.candidate_uid)
            set_rlimit(resource.RLIMIT_NPROC, limits["max_processes"])
            os.setresuid(self.candidate_uid, self.candidate_uid, self.candidate_uid)
        if not (self.readonly and self.cgroups):
            # Every mount is nosuid and the host sweeps the slot's cgroup when
            # a worker dies; without those, the process has to guard itself.
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        self._budget[0] = limits["max_output_kb"] << 10
        sys.stdout = sys.__stdout__ = self._streams[0]
        sys.stderr = sys.__stderr__ = self._streams[1]
        return 3, 4

    def run_job(self, job: dict, control_fd: int | None = None) -> dict:
        """Judge one job; return the verdict dict. Never raises for a bad program."""
        t0 = time.monotonic()
        limits = job["limits"]
        try:
            verdict = self._run(job, limits, t0, control_fd)
        except Exception as exc:  # noqa: BLE001 - a sandbox failure, not the program's
            self._stop_judge()
            verdict = {"status": INFRA_ERROR, "tests_passed": 0, "tests_total": 0,
                       "stderr": f"sandbox failure: {type(exc).__name__}: {exc}"}
        verdict["job_id"] = job.get("job_id", "")
        verdict["duration_s"] = round(time.monotonic() - t0, 6)
        return verdict

    def _run(self, job: dict, limits: dict, t0: float, control_fd: int | None) -> dict:
        if self.judge_sock is not None and self._judge_gone():
            self._stop_judge()  # killed from outside (e.g. a container server's kill(-1) sweep)
        if self.judge_sock is None:
            self._start_judge()
        self._apply_cgroup_limits(limits)
        oom_before = self._oom_kills() if self.cgroups else 0
        self._own_workdir = False
        if limits.get("_workdir"):  # the caller made (and cleans) the run's directory
            self._workdir = limits["_workdir"]
        elif self.scratch:
            self._workdir = self.scratch[0]
        else:  # no private /tmp: a fresh directory per run, removed afterwards
            self._own_workdir = True
            import tempfile

            self._workdir = tempfile.mkdtemp(prefix="itercode-run-")
            if self.candidate_uid is not None:
                os.chown(self._workdir, self.candidate_uid, self.candidate_uid)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        cand_pid = -1
        flush_stdio()  # nothing buffered here may leak into the run's output
        try:
            if self.pidns:
                unshare(CLONE_NEWPID)  # the next child is the init of a fresh PID namespace
            try:
                cand_pid = os.fork()
            finally:
                if self.pidns and cand_pid != 0:
                    setns(self._pidns_fd, CLONE_NEWPID)
            if cand_pid == 0:
                try:
                    fds = self._enter_candidate(limits, out_w, req_r, resp_w)
                except BaseException as exc:  # noqa: BLE001
                    for fd in (1, out_w):
                        try:
                            os.write(fd, f"sandbox setup failed: {exc!r}\n".encode())
                            break
                        except OSError:
                            pass
                    os._exit(SETUP_FAILED)
                candidate_main(job, *fds)
            os.close(req_r)
            os.close(resp_w)
            os.close(out_w)
            req_r = resp_w = out_w = -1
            judge_job = json.dumps({k: job[k] for k in ("job_id", "tests", "entry_point", "trusted_prefix") if k in job}).encode()
            for attempt in range(2):
                try:
                    socket.send_fds(self.judge_sock, [b"J"], [req_w, resp_r])
                    write_frame(self.judge_sock.fileno(), judge_job)
                    break
                except OSError:
                    if attempt:
                        raise
                    self._stop_judge()  # it died since the last job: start another
                    self._start_judge()
            os.close(req_w)
            os.close(resp_r)
            req_w = resp_r = -1
            result, output, timed_out, aborted = self._wait(out_r, t0 + limits["timeout_s"],
                                                            limits["max_output_kb"] << 10, control_fd)
        finally:
            if cand_pid > 0:
                try:
                    os.kill(cand_pid, signal.SIGKILL)  # the PID namespace's init: every process of the run dies
                except OSError:
                    pass
            for fd in (req_r, req_w, resp_r, resp_w, out_w):
                if fd >= 0:
                    os.close(fd)
        cand_status = self._reap(cand_pid)
        if not self.pidns:
            # No PID namespace: kill the run's process group, then whatever left it
            # (setsid) through the slot's cgroup. With one, reaping the namespace's
            # init above already guaranteed that every process of the run is gone.
            if cand_pid > 0:
                try:
                    os.killpg(cand_pid, signal.SIGKILL)
                except OSError:
                    pass
            for path in self.cgroups.values():
                self._kill_cgroup(path)
        self._wipe()
        output += self._drain(out_r)
        os.close(out_r)
        if result is None and self.judge_sock is not None:
            # The candidate is gone, so a healthy judge answers at once; one that
            # does not (stuck in the tests' own code) is replaced.
            result = self._judge_reply(time.monotonic() + 1.0)
            if result is None:
                self._stop_judge()
            elif timed_out:
                result = None
        if result is not None and result.get("job_id") != job.get("job_id", ""):
            self._stop_judge()  # an answer to some other job: the judge is out of step
            result = None
        if aborted:
            raise RuntimeError("the worker was told to stop")
        oomed = self.cgroups and self._oom_kills() > oom_before
        cand_note = self._describe_exit(cand_status)
        if timed_out:
            status, passed, total, message = TIMEOUT, 0, 0, f"wall-clock timeout of {limits['timeout_s']} s"
        elif result is None:
            status, passed, total, message = INFRA_ERROR, 0, 0, "the test process died without a verdict"
        else:
            status = result.get("status", INFRA_ERROR)
            passed, total = int(result.get("tests_passed", 0)), int(result.get("tests_total", 0))
            message = str(result.get("message", ""))
            if result.get("died"):
                sig = -cand_status if cand_status is not None and cand_status < 0 else None
                if cand_status == SETUP_FAILED and not result.get("loaded"):
                    # A run that never got going is the sandbox's failure (retried
                    # once by the caller); a program faking it cannot pass either.
                    status = INFRA_ERROR
                elif oomed:
                    status, message = OOM, message + " (killed by the memory limit)"
                elif sig == signal.SIGXCPU:
                    status, message = TIMEOUT, message + " (CPU time limit)"
                elif cand_note:
                    message += f" ({cand_note})"
        if status not in (PASSED, TIMEOUT, OOM) and oomed:
            status = OOM
        text = message.strip()
        out_text = output.decode("utf-8", "replace")
        if out_text.strip():
            text += ("\n" if text else "") + "--- candidate output ---\n" + out_text
        cap = limits["max_output_kb"] << 10
        if len(text) > cap:
            text = text[:cap] + "\n[truncated]"
        return {"status": status, "tests_passed": passed, "tests_total": total, "stderr": text}

    def _wipe(self) -> list[str]:
        """Remove everything the run left in its work dir and /dev/shm (all
        its processes are dead by now, so nothing races the removal); return
        what could not be removed ([] = clean). Any tree a run can make is
        handled (see harness/wipe.py); a non-empty answer means this worker
        must not take another job."""
        from .wipe import empty_dir, remove_tree  # local: keeps this hunk apart from the imports

        if not self.scratch or self._workdir not in self.scratch:
            # A caller's directory is the caller's to clean; our own temp dir
            # goes, even if the run replaced it with a symlink.
            return remove_tree(self._workdir) if self._own_workdir else []
        failed = []
        for top in self.scratch:
            failed += empty_dir(top)
            try:  # the run owns its tops and may have changed their mode
                os.chmod(top, 0o700 if self.candidate_uid is not None else 0o1777)
            except OSError as exc:
                failed.append(f"{top} (chmod: {exc.strerror})")
        return failed

    def _judge_reply(self, deadline: float) -> dict | None:
        """Read the judge's answer for the current job (None: no answer by the deadline)."""
        fd = self.judge_sock.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            raw = read_frame(fd, MAX_CONTROL_FRAME)
            return None if raw is None else json.loads(raw)
        except (OSError, ValueError, FrameTooLarge):
            return None

    @staticmethod
    def _describe_exit(status: int | None) -> str:
        if status is None:
            return ""
        if status < 0:
            try:
                name = signal.Signals(-status).name
            except ValueError:
                name = str(-status)
            return f"candidate killed by {name}"
        return f"candidate exit code {status}" if status else ""

    @staticmethod
    def _reap(pid: int) -> int | None:
        if pid <= 0:
            return None
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                return None
            except InterruptedError:
                continue
            return os.waitstatus_to_exitcode(status)

    @staticmethod
    def _drain(fd: int) -> bytes:
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 1 << 16)
        except (BlockingIOError, OSError):
            return b""

    def _wait(self, out_r: int, deadline: float, cap: int, control_fd: int | None):
        """Wait for the judge's verdict, draining candidate output, until the deadline."""
        result, output, timed_out, aborted = None, bytearray(), False, False
        judge_fd = self.judge_sock.fileno()
        poller = select.poll()
        poller.register(judge_fd, select.POLLIN)
        poller.register(out_r, select.POLLIN)
        if control_fd is not None:
            poller.register(control_fd, 0)  # only hang-up: the host may queue the next job meanwhile
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            try:
                events = poller.poll(left * 1000)
            except InterruptedError:
                continue
            done = False
            for fd, ev in events:
                if fd == control_fd:
                    aborted = done = True
                    break
                if fd == judge_fd:
                    done = True
                    result = self._judge_reply(time.monotonic() + 5.0)
                    if result is None:
                        self._stop_judge()  # it died or broke the protocol
                    break
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if chunk:
                    if len(output) < cap:
                        output += chunk[: cap - len(output)]
                else:
                    poller.unregister(fd)
            if done:
                break
        return result, bytes(output), timed_out, aborted


def serve(in_fd: int, out_fd: int, config: dict) -> int:
    """The worker loop: one ready frame, then a verdict frame per job frame."""
    worker = Worker(config)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        write_frame(out_fd, json.dumps({"ready": True, **worker.describe()}).encode())
        while True:
            raw = read_frame(in_fd, MAX_CONTROL_FRAME)
            if raw is None:
                return 0
            job = json.loads(raw)
            verdict = worker.run_job(job, control_fd=in_fd)
            write_frame(out_fd, json.dumps(verdict).encode())
    except (BrokenPipeError, SystemExit, KeyboardInterrupt):
        return 0
    finally:
        worker.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="itercode's in-sandbox harness (a warm worker).")
    parser.add_argument("--config", default="{}", help="JSON worker config (see Worker)")
    args = parser.parse_args(argv)
    # Keep the protocol off fds 0/1 so that nothing a child inherits can touch it.
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    return serve(in_fd, out_fd, json.loads(args.config))


if __name__ == "__main__":
    sys.exit(main())