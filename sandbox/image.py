"""Build the Docker sandbox image offline, from the host's own Python.

No registry can be reached on the machines itercode is built for, so the image
is made here: a root filesystem tarball holding only what one Python
interpreter needs (its executable, its standard library without site-packages
and tests, and the shared libraries `ldd` names), a two-line /etc/passwd with
an unprivileged user, and itercode's in-container files (the fork server and
the shared harness). `docker import` turns the tarball into an image. Nothing
else of the host goes in: no /etc/shadow, no home directories, no secrets.

The tag is a hash of everything that goes in, so a changed harness or a new
interpreter gives a new image on first use, and an unchanged one is reused.

A user with a registry can name any image with Python 3 on its PATH instead
(``--image python:3.11-slim``): :func:`derive_image` adds itercode's files on
top of it with a one-step ``docker build``.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

IMAGE_REPO = "itercode-sandbox"
DERIVED_REPO = "itercode-sandbox-derived"
LABEL = "itercode.sandbox.image"
# Bump when the layout of the image changes in a way the hash cannot see.
RECIPE_VERSION = "1"

# Inside the image: where the interpreter and itercode's files live.
PYTHON_IN_IMAGE = "/usr/local/bin/python3"
APP_DIR = "/opt/itercode"
LIB_DIR = "/usr/local/lib/itercode-libs"
SANDBOX_UID = 65534  # "nobody": owns nothing in the image
SANDBOX_GID = 65534

# Parts of the standard library a sandboxed test never needs; they make the
# image several times larger (tests alone are ~120 MB).
_SKIP_STDLIB = {
    "site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo",
    "ensurepip", "lib2to3", "pydoc_data", "__phello__",
}
_LDD_LINE = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x")


def app_files() -> dict[str, bytes]:
    """itercode's files that run inside the container: name -> content.

    The container server and the shared harness package (the same files the
    process backend runs), unchanged.
    """
    here = Path(__file__).resolve().parent
    files = {"container_server.py": (here / "container_server.py").read_bytes()}
    for path in sorted((here / "harness").glob("*.py")):
        files[f"harness/{path.name}"] = path.read_bytes()
    return files


@dataclass
class PythonLayout:
    """Where one Python installation keeps its parts on the host."""

    executable: Path
    stdlib: Path
    version: str  # "3.11"

    @classmethod
    def of_running_interpreter(cls) -> "PythonLayout":
        # A venv's python is a symlink to its base; the base owns the stdlib.
        exe = Path(getattr(sys, "_base_executable", sys.executable) or sys.executable).resolve()
        stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
        return cls(exe, stdlib, f"{sys.version_info.major}.{sys.version_info.minor}")


def shared_libraries(binaries: list[Path]) -> set[Path]:
    """Every shared library (and the dynamic loader) that ``ldd`` lists for ``binaries``."""
    libs: set[Path] = set()
    for chunk in range(0, len(binaries), 64):
        batch = [str(b) for b in binaries[chunk:chunk + 64]]
        out = subprocess.run(["ldd", *batch], capture_output=True, text=True).stdout
        for line in out.splitlines():
            m = _LDD_LINE.search(line)
            if m and os.path.exists(m.group(1)):
                libs.add(Path(m.group(1)))
    return libs


def _stdlib_files(stdlib: Path):
    """(path on host, path relative to stdlib) for every file the image keeps."""
    for root, dirs, files in os.walk(stdlib):
        rel_root = Path(root).relative_to(stdlib)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in _SKIP_STDLIB and not d.startswith("config-")]
        dirs.sort()
        for name in sorted(files):
            # Optimised bytecode is never used (no -O); plain .pyc saves compile time.
            if ".opt-" in name or name.endswith((".exe", ".a")):
                continue
            yield Path(root) / name, rel_root / name


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644, mtime: float | None = None) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.size, info.mode = len(data), mode
    info.mtime = int(time.time() if mtime is None else mtime)
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, host_path: Path, name: str) -> None:
    # Dereference symlinks: the image holds plain files under the names the
    # loader asks for, owned by root and not writable by the sandbox user.
    real = host_path.resolve()
    data = real.read_bytes()
    mode = 0o755 if os.access(host_path, os.X_OK) else 0o644
    # Keep the modification time: a .pyc names its source's mtime, and on a
    # read-only root a mismatch means recompiling the module at every import.
    _add_bytes(tar, name, data, mode, mtime=real.stat().st_mtime)


def _parents(path: str) -> list[str]:
    parts = Path(path).parts[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def write_rootfs(out_path: Path, layout: PythonLayout, files: dict[str, bytes]) -> None:
    """Write the root filesystem tarball of the sandbox image to ``out_path``."""
    stdlib_in_image = f"/usr/local/lib/python{layout.version}"
    stdlib = list(_stdlib_files(layout.stdlib))
    dynload = [h for h, rel in stdlib if h.suffix == ".so"]
    libs = sorted(shared_libraries([layout.executable, *dynload]))
    entries: list[tuple[str, object]] = []  # (path in image, host Path | bytes)
    entries.append((f"/usr/local/bin/python{layout.version}", layout.executable))
    entries += [(f"{stdlib_in_image}/{rel.as_posix()}", host) for host, rel in stdlib]
    # Libraries go flat into one directory (found through LD_LIBRARY_PATH), so
    # no host directory such as /root/.pyenv appears in the image; only the
    # dynamic loader keeps its path, which executables name literally.
    interp = {lib for lib in libs if lib.name.startswith("ld-linux")}
    entries += [(str(lib), lib) for lib in interp]
    entries += [(f"{LIB_DIR}/{lib.name}", lib) for lib in libs if lib not in interp]
    entries += [(f"{APP_DIR}/{name}", data) for name, data in sorted(files.items())]
    passwd = f"root:x:0:0:root:/root:/bin/false\nsandbox:x:{SANDBOX_UID}:{SANDBOX_GID}:sandbox:/work:/bin/false\n"
    entries.append(("/etc/passwd", passwd.encode()))
    entries.append(("/etc/group", f"root:x:0:\nsandbox:x:{SANDBOX_GID}:\n".encode()))

    dirs = {"/tmp", "/work", "/dev", "/proc", "/sys", "/etc"}
    for name, _ in entries:
        dirs.update(_parents(name))
    with tarfile.open(out_path, "w") as tar:
        for d in sorted(dirs):
            _add_dir(tar, d, 0o1777 if d in ("/tmp", "/work") else 0o755)
        for name, src in entries:
            if isinstance(src, bytes):
                _add_bytes(tar, name, src)
            else:
                _add_file(tar, src, name)
        link = tarfile.TarInfo(PYTHON_IN_IMAGE.lstrip("/"))
        link.type, link.linkname = tarfile.SYMTYPE, f"python{layout.version}"
        tar.addfile(link)


def image_tag(layout: PythonLayout, files: dict[str, bytes]) -> str:
    """A tag that changes whenever anything that goes into the image changes."""
    # This file is the recipe: editing it changes the tag too.
    h = hashlib.sha256(RECIPE_VERSION.encode() + Path(__file__).read_bytes())
    for part in (str(layout.executable), str(layout.stdlib), sys.version):
        h.update(part.encode() + b"\0")
    h.update(layout.executable.read_bytes())
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return f"{IMAGE_REPO}:{h.hexdigest()[:16]}"


def _image_exists(client, name: str) -> bool:
    import docker.errors

    try:
        client.images.get(name)
        return True
    except docker.errors.ImageNotFound:
        return False


def ensure_image(client, force: bool = False, progress=None) -> str:
    """Return the name of itercode's own sandbox image, building it if needed.

    ``progress`` (optional) is called with one-line messages. Build takes a
    few seconds; later calls return at once.
    """
    layout = PythonLayout.of_running_interpreter()
    files = app_files()
    tag = image_tag(layout, files)
    if not force and _image_exists(client, tag):
        return tag
    if progress:
        progress(f"building sandbox image {tag} from {layout.executable} (offline)")
    repo, version = tag.split(":")
    with tempfile.TemporaryDirectory(prefix="itercode-image-") as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        write_rootfs(rootfs, layout, files)
        changes = [
            f"ENV LD_LIBRARY_PATH={LIB_DIR}",
            "ENV PATH=/usr/local/bin:/usr/bin:/bin",
            f"USER {SANDBOX_UID}:{SANDBOX_GID}",
            "WORKDIR /work",
            f"LABEL {LABEL}={version}",
            f'CMD ["{PYTHON_IN_IMAGE}", "-I", "-S", "{APP_DIR}/container_server.py"]',
        ]
        # docker import writes the image under its final tag in one step, so a
        # crash mid-build leaves no half-made image under that tag.
        client.api.import_image_from_file(str(rootfs), repository=repo, tag=version, changes=changes)
    if not _image_exists(client, tag):
        raise RuntimeError(f"docker import did not produce {tag}")
    remove_stale_images(client, keep=tag)
    return tag


def remove_stale_images(client, keep: str | None = None) -> list[str]:
    """Remove itercode's sandbox images other than ``keep`` (older harness or
    recipe versions). Images that a container still uses stay."""
    import docker.errors

    removed = []
    for img in client.images.list(filters={"label": LABEL}):
        for tag in img.tags:
            if tag != keep and tag.split(":")[0] in (IMAGE_REPO, DERIVED_REPO):
                try:
                    client.images.remove(tag, noprune=False)
                    removed.append(tag)
                except docker.errors.APIError:
                    pass  # in use by a running sandbox, or already gone
    return removed


def derive_image(client, base: str, force: bool = False, progress=None) -> str:
    """Put itercode's in-container files on top of a user's image (``--image``).

    The base must have ``python3`` (3.8+) on its PATH; it must already be
    present locally or be pullable from a registry.
    """
    files = app_files()
    h = hashlib.sha256((RECIPE_VERSION + base).encode())
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    tag = f"{DERIVED_REPO}:{h.hexdigest()[:16]}"
    if not force and _image_exists(client, tag):
        return tag
    if progress:
        progress(f"building sandbox image {tag} on top of {base}")
    dockerfile = (
        f"FROM {base}\n"
        f"COPY --chown=0:0 app/ {APP_DIR}/\n"
        f"LABEL {LABEL}=derived\n"
        f"USER {SANDBOX_UID}:{SANDBOX_GID}\n"
        f'CMD ["python3", "-I", "-S", "{APP_DIR}/container_server.py"]\n'
    )
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add_bytes(tar, "Dockerfile", dockerfile.encode())
        for name, data in files.items():
            _add_bytes(tar, f"app/{name}", data)
    buf.seek(0)
    client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, network_mode="none")
    return tag


def python_in(image_name: str) -> str:
    """The interpreter command inside ``image_name`` (ours: a fixed path)."""
    return PYTHON_IN_IMAGE if image_name.startswith(IMAGE_REPO + ":") else "python3"
