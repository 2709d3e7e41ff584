"""The guest image on a host: uploaded by hash into the host's work folder, or used in place.

:func:`place_image` is what the runner does before a pair's first run and what ``migbench
provision`` does for each host: a local host boots the image where it was built; an SSH host gets
the files under ``<workdir>/images/<digest>/``, uploaded only when missing or different (SHA-256),
under a temporary name first, so a crash never leaves a half file under the final name.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from pathlib import Path

from harness.digest import sha256_file
from harness.errors import HostError
from harness.guest.image import GuestImage
from harness.hosts.host import Host, sh_script
from harness.plan.models import HostSpec

# $1: a folder; the rest: file names in it. Prints "<sha256>  <name>" for those present.
_HASHES_SH = 'cd -- "$1" 2>/dev/null || exit 0; shift; sha256sum -- "$@" 2>/dev/null; exit 0'


def image_dir(spec: HostSpec, image: GuestImage) -> Path:
    return spec.workdir / "images" / image.digest[:16]


def _image_files(image: GuestImage) -> list[Path]:
    return [p for p in (image.kernel, image.initrd, image.fio_initrd, image.debian_disk,
                        image.debian_initrd) if p is not None]


def place_image(host: Host, image: GuestImage,
                log: Callable[[str], None] | None = None) -> tuple[GuestImage, list[str]]:
    """The image as ``host`` has it, uploading files that are missing or differ (by SHA-256).

    A local host boots the image where it is. On an SSH host the files live in
    ``<workdir>/images/<digest>/`` and are uploaded under a temporary name, checked, and renamed,
    so a crash never leaves a half file under the final name. Returns the host's image and the
    names uploaded.

    :raise HostError: the host cannot be reached, or an upload failed or arrived damaged.
    """
    if host.is_local:
        return image, []
    d = image_dir(host.spec, image)
    files = _image_files(image)
    want = {f.name: sha256_file(f) for f in files}
    uploaded: list[str] = []

    def remote_hashes() -> dict[str, str]:
        out = host.run(sh_script(_HASHES_SH, d, *want), timeout=120)
        found = {}
        for line in out.splitlines():
            digest, _, name = line.partition("  ")
            found[name.strip()] = digest.strip()
        return found

    have = remote_hashes()
    missing = [f for f in files if have.get(f.name) != want[f.name]]
    if missing:
        host.mkdir(d)
    for f in missing:
        if log:
            log(f"{host.label}: uploading {f.name} ({f.stat().st_size // 1024} KiB) to {d}")
        tmp = d / f".{f.name}.{secrets.token_hex(4)}.part"
        try:
            host.put(f, tmp)
            host.run(["mv", "-f", "--", str(tmp), str(d / f.name)], timeout=30)
        except BaseException:
            host.run(["rm", "-f", "--", str(tmp)], timeout=30, check=False)
            raise
        uploaded.append(f.name)
    if missing:
        have = remote_hashes()
        bad = [f.name for f in files if have.get(f.name) != want[f.name]]
        if bad:
            raise HostError(f"{host.label}: uploaded image files {', '.join(bad)} to {d} but "
                            "their SHA-256 does not match")
    return dataclasses.replace(
        image, kernel=d / image.kernel.name, initrd=d / image.initrd.name,
        fio_initrd=d / image.fio_initrd.name if image.fio_initrd is not None else None,
        debian_disk=d / image.debian_disk.name if image.debian_disk is not None else None,
        debian_initrd=d / image.debian_initrd.name if image.debian_initrd is not None else None,
    ), uploaded
