"""`itercode sandbox ...`: manage the Docker sandbox (its image and its containers).

    itercode sandbox build-image [--force] [--image BASE]   # offline build (or on top of BASE)
    itercode sandbox clean [--all] [--images]               # remove orphaned containers
    itercode sandbox status                                 # daemon, image, live containers

The process backend needs none of this; it is the default.
"""
from __future__ import annotations

import argparse

from codegen.errors import UserError
from sandbox import docker_containers, image
from sandbox.docker_containers import DockerUnavailable, connect

HELP = "manage the Docker sandbox: build its image offline, remove orphaned containers, show status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox_command", metavar="ACTION", required=True)
    build = sub.add_parser("build-image", help="build the sandbox image offline from this machine's Python")
    build.add_argument("--force", action="store_true", help="rebuild even if an image with the same content exists")
    build.add_argument("--image", default=None, metavar="BASE",
                       help="instead, add itercode's files on top of BASE (any image with python3, e.g. python:3.11-slim); "
                       "use it with ITERCODE_SANDBOX_IMAGE=BASE")
    clean = sub.add_parser("clean", help="remove sandbox containers whose itercode process is gone")
    clean.add_argument("--all", action="store_true", help="remove every itercode sandbox container, even of live processes")
    clean.add_argument("--images", action="store_true", help="also remove sandbox images of older versions")
    sub.add_parser("status", help="show the daemon, the current image and the sandbox containers")


def _client():
    try:
        return connect()
    except DockerUnavailable as e:
        raise UserError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    client = _client()
    if args.sandbox_command == "build-image":
        try:
            if args.image:
                name = image.derive_image(client, args.image, force=args.force, progress=print)
            else:
                name = image.ensure_image(client, force=args.force, progress=print)
        except Exception as e:  # docker.errors.BuildError / APIError / ImageNotFound
            base = f" on top of {args.image}" if args.image else ""
            raise UserError(f"could not build the sandbox image{base}: {e}") from None
        print(name)
        return 0
    if args.sandbox_command == "clean":
        n = docker_containers.remove_orphans(client, everything=args.all)
        print(f"removed {n} sandbox container(s)")
        if args.images:
            current = image.ensure_image(client) if not args.all else None
            for tag in image.remove_stale_images(client, keep=current):
                print(f"removed image {tag}")
        return 0
    # status
    version = client.version().get("Version", "?")
    print(f"dockerd {version}: reachable")
    layout = image.PythonLayout.of_running_interpreter()
    tag = image.image_tag(layout, image.app_files())
    present = any(tag in (img.tags or []) for img in client.images.list(name=image.IMAGE_REPO))
    print(f"image    {tag} ({'built' if present else 'not built yet: itercode sandbox build-image'})")
    rows = docker_containers.sandbox_containers(client)
    print(f"containers: {len(rows)}")
    for c in rows:
        labels = c.get("Labels") or {}
        orphan = " (orphan)" if docker_containers.is_orphan(labels) else ""
        print(f"  {c['Id'][:12]} {c.get('State', '?'):<8} owner pid {labels.get(docker_containers.OWNER_PID, '?')}{orphan}")
    return 0
