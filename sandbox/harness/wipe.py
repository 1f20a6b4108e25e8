"""Emptying a run's writable directories, whatever tree the run left there.

A run owns its work dir, /tmp and /dev/shm, so it can leave anything a
process may make: chains tens of thousands of directories deep (paths far
beyond PATH_MAX, and recursion deeper than Python's limit), directories with
100k entries, directories chmod'ed to 000 or 0o200, files without
permissions, symlinks pointing anywhere, fifos and unix sockets. A recursive,
path-based removal (``shutil.rmtree``) fails on several of these, and a wipe
that fails must never leave the next run a dirty worker.

``empty_dir`` walks the tree without recursion and without ever building a
path: every step is relative to an open directory fd (``openat`` with
O_NOFOLLOW, ``unlinkat``), so neither PATH_MAX nor the recursion limit
applies, and a symlink is only ever unlinked, never followed. At most
``MAX_OPEN_FDS`` directory fds are held at once; deeper levels are reached
again through ".." and checked by (st_dev, st_ino), so a deep tree cannot run
the caller out of file descriptors. Directories it cannot enter or change
are given u+rwx first (the caller owns them, or is root), and it never
crosses into another file system (a mount point inside is reported).

It expects every process of the run to be dead (nothing races it), and it
is standard-library only, Python 3.8+ (it also runs in user images).
"""
from __future__ import annotations

import errno
import os
import stat

__all__ = ["empty_dir", "is_empty", "remove_tree"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_OPEN_FDS = 48  # directory fds held at once, however deep the tree
MAX_REPORTED = 20  # failures listed one by one; the rest are counted
_FIXABLE = (errno.EACCES, errno.EPERM)


class _Dir:
    """One directory on the walk: its fd (-1 once closed to save fds), its
    identity, its name in its parent and the subdirectories still to empty."""

    __slots__ = ("fd", "dev", "ino", "name", "subdirs", "failed", "mode_was")

    def __init__(self, fd: int, st: os.stat_result, name: str):
        self.fd, self.dev, self.ino, self.name = fd, st.st_dev, st.st_ino, name
        self.subdirs: list[str] = []
        self.failed = False  # something inside stays: its rmdir is skipped, not reported
        self.mode_was: int | None = None  # its mode before the wipe gave it u+rwx


class _Walk:
    """The state of one empty_dir call: the stack of directories and the failures."""

    def __init__(self, path: str):
        self.path = path
        self.stack: list[_Dir] = []
        self.lowest_open = 0  # stack[i].fd is open for every i >= lowest_open
        self.failures: list[str] = []
        self.unreported = 0
        self.top_mode_was: int | None = None

    # -- reporting -----------------------------------------------------------
    def fail(self, name: str, why: str) -> None:
        """Record that ``name`` (in the top of the stack) stays, and why."""
        if self.stack:
            self.stack[-1].failed = True
        if len(self.failures) >= MAX_REPORTED:
            self.unreported += 1
            return
        self.failures.append(f"{self.where(name)} ({why})")

    def where(self, name: str) -> str:
        """A readable path for a report: deep ones are shortened in the middle
        (the full path may be megabytes long)."""
        parts = [d.name for d in self.stack[1:]] + ([name] if name else [])
        if len(parts) > 6:
            parts = parts[:2] + [f"...{len(parts) - 5} more levels..."] + parts[-3:]
        return os.path.join(self.path, *parts)

    def report(self) -> list[str]:
        if self.unreported:
            return self.failures + [f"... and {self.unreported} more under {self.path}"]
        return self.failures

    # -- the walk ------------------------------------------------------------
    def run(self) -> list[str]:
        fd = self._open_top()
        if fd < 0:
            return self.report()
        try:
            top = self._push(fd, "")
            if top is None:
                return self.report()
            if not self._scan(top):
                return self.report()  # the common case: it was empty (one scandir)
            self._empty_subdirs()
            if not top.failed:
                self._check_empty(top)
            if top.mode_was is not None and top.fd >= 0:
                try:
                    os.fchmod(top.fd, top.mode_was)  # the top's own mode is left as found
                except OSError:
                    pass
            return self.report()
        finally:
            for d in self.stack:
                if d.fd >= 0:
                    os.close(d.fd)
                    d.fd = -1

    def _open_top(self) -> int:
        """Open ``path`` itself; -1 if it does not exist or cannot be opened (reported)."""
        try:
            return os.open(self.path, _DIR_FLAGS)
        except FileNotFoundError:
            return -1  # nothing inside what does not exist
        except OSError as exc:
            first = exc
        try:  # mode 000 or the like: add u+rwx (restored at the end)
            st = os.lstat(self.path)
            if first.errno not in _FIXABLE or not stat.S_ISDIR(st.st_mode):
                raise first
            os.chmod(self.path, stat.S_IMODE(st.st_mode) | 0o700)
            fd = os.open(self.path, _DIR_FLAGS)
        except OSError as exc:
            self.failures.append(f"{self.path} ({_why(exc)})")
            return -1
        self.top_mode_was = stat.S_IMODE(st.st_mode)
        return fd

    def _push(self, fd: int, name: str) -> _Dir | None:
        """Put the open directory ``fd`` (``name`` in the top of the stack) on
        the stack, with u+rwx; None (fd closed, reported) if it cannot be used."""
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            self.fail(name, _why(exc))
            return None
        if self.stack and st.st_dev != self.stack[0].dev:
            os.close(fd)
            self.fail(name, "another file system is mounted here; not entered")
            return None
        d = _Dir(fd, st, name)
        if not self.stack:
            d.mode_was = self.top_mode_was
        self.stack.append(d)
        self._bound_open_fds()
        self._make_writable(d, st.st_mode)
        return d

    def _empty_subdirs(self) -> None:
        """Depth first, with no recursion: enter each subdirectory, empty it,
        go back up and remove it."""
        stack = self.stack
        while True:
            here = stack[-1]
            if here.subdirs:
                self._enter(here, here.subdirs.pop())
                continue
            if len(stack) == 1:
                return
            parent_fd = self._parent_fd()
            if parent_fd < 0:
                return  # lost the way back up (reported): stop rather than guess
            os.close(here.fd)
            stack.pop()
            parent = stack[-1]
            if here.failed:
                parent.failed = True
                continue
            self._remove(parent, here.name, os.rmdir)

    def _enter(self, parent: _Dir, name: str) -> None:
        """Open ``name`` (a subdirectory of ``parent``), push it and scan it."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):  # not a directory after all: a symlink or file
                self._remove(parent, name, os.unlink)
                return
            if exc.errno not in _FIXABLE:
                self.fail(name, _why(exc))
                return
            # Mode 000, 0o200...: give it u+rwx first. It is known to be a
            # directory (O_NOFOLLOW said so), and nothing races the wipe.
            try:
                os.chmod(name, 0o700, dir_fd=parent.fd)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
            except OSError as exc2:
                self.fail(name, f"{_why(exc)}; chmod: {_why(exc2)}")
                return
        child = self._push(fd, name)
        if child is not None:
            self._scan(child)

    @staticmethod
    def _make_writable(d: _Dir, st_mode: int | None = None) -> bool:
        """Give a directory u+rwx if it lacks it (to list, enter and remove its
        entries), remembering the first mode it had; True if it changed."""
        try:
            if st_mode is None:
                st_mode = os.fstat(d.fd).st_mode
            mode = stat.S_IMODE(st_mode)
            if mode & 0o700 == 0o700:
                return False
            os.fchmod(d.fd, mode | 0o700)
        except OSError:
            return False  # the removals that need it will fail and be reported
        if d.mode_was is None:
            d.mode_was = mode
        return True

    def _scan(self, d: _Dir) -> bool:
        """Remove every non-directory in ``d`` and list its subdirectories;
        True if ``d`` had any entry."""
        found = False
        try:
            with os.scandir(d.fd) as entries:
                for entry in entries:
                    found = True
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False  # then unlink says what it is
                    if is_dir:
                        d.subdirs.append(entry.name)
                    else:
                        self._remove(d, entry.name, os.unlink)
        except OSError as exc:
            self.fail("", f"cannot list: {_why(exc)}")
            return True
        return found

    def _remove(self, d: _Dir, name: str, remove) -> None:
        """unlink or rmdir ``name`` in ``d``, once more after giving ``d`` u+rwx."""
        for attempt in (0, 1):
            try:
                remove(name, dir_fd=d.fd)
                return
            except FileNotFoundError:
                return
            except IsADirectoryError:  # listed without a type and it is a directory
                d.subdirs.append(name)
                return
            except OSError as exc:
                if attempt or exc.errno not in _FIXABLE or not self._make_writable(d):
                    self.fail(name, _why(exc))
                    return

    def _bound_open_fds(self) -> None:
        """Close the fd furthest from the top of the stack once too many are open."""
        if len(self.stack) - self.lowest_open > MAX_OPEN_FDS:
            far = self.stack[self.lowest_open]
            os.close(far.fd)
            far.fd = -1
            self.lowest_open += 1

    def _parent_fd(self) -> int:
        """The fd of the directory below the top of the stack, reopened through
        ".." (and checked to be the same directory) if it was closed."""
        here, parent = self.stack[-1], self.stack[-2]
        if parent.fd >= 0:
            return parent.fd
        try:
            fd = os.open("..", _DIR_FLAGS, dir_fd=here.fd)
        except OSError as exc:
            self.fail("..", f"cannot go back up: {_why(exc)}")
            return -1
        try:
            st = os.fstat(fd)
        except OSError as exc:
            os.close(fd)
            self.fail("..", f"cannot go back up: {_why(exc)}")
            return -1
        if (st.st_dev, st.st_ino) != (parent.dev, parent.ino):
            os.close(fd)
            self.fail("..", "the parent directory changed during the wipe")
            return -1
        parent.fd = fd
        self.lowest_open = len(self.stack) - 2
        return fd

    def _check_empty(self, top: _Dir) -> None:
        """A last scandir: "nothing reported" must mean "nothing left"."""
        try:
            left = os.listdir(top.fd)
        except OSError as exc:
            self.fail("", f"cannot list: {_why(exc)}")
            return
        for name in left[:3]:
            self.fail(name, "still there after the wipe")


def _why(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def empty_dir(path: str) -> list[str]:
    """Remove everything inside ``path`` (not ``path`` itself); return what
    could not be removed, one "path (reason)" line each (at most
    MAX_REPORTED of them, then a count). An empty list means ``path`` is now
    empty, or does not exist. Never follows a symlink; gives directories
    inside u+rwx where needed (``path``'s own mode is left as found).
    Raises nothing for what it finds on disk: every OSError is reported."""
    return _Walk(os.fspath(path)).run()


def is_empty(path: str) -> bool:
    """True if ``path`` is a directory with no entries (False if it cannot be listed)."""
    try:
        with os.scandir(path) as entries:
            for _ in entries:
                return False
    except OSError:
        return False
    return True


def remove_tree(path: str) -> list[str]:
    """Remove ``path`` itself, whatever it is now (a run may have replaced its
    directory by a symlink or a file: that is unlinked, never followed);
    return what could not be removed, as ``empty_dir`` does."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    except OSError as exc:
        return [f"{path} ({_why(exc)})"]
    if stat.S_ISDIR(st.st_mode):
        failed = empty_dir(path)
        if failed:
            return failed
        remove = os.rmdir
    else:
        remove = os.unlink
    try:
        remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        return [f"{path} ({_why(exc)})"]
    return []
