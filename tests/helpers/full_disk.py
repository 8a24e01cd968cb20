"""A filesystem that fills up: a local folder (the "disk") behind an fsspec protocol
(``fulldisk://``) with a capacity in bytes. A write that would take the files under the disk
folder past it fails as a full disk does, with ``OSError(ENOSPC)``, and writes nothing;
everything else is the local filesystem. Use it through the store URL with storage options
``{"disk": <folder>, "capacity": <bytes>}``.
It needs no root, no user namespace and no mount, so the disk-full case runs everywhere."""

from __future__ import annotations

import errno
import os

import fsspec
from fsspec.implementations.local import LocalFileSystem

PROTOCOL = "fulldisk"


class FullDiskFileSystem(LocalFileSystem):
    protocol = (PROTOCOL,)
    root_marker = "/"

    def __init__(self, disk: str, capacity: int, **kwargs):
        super().__init__(auto_mkdir=True, **kwargs)
        self.disk, self.capacity = disk, capacity

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        return LocalFileSystem._strip_protocol(path)

    def used(self) -> int:
        """Bytes held by the files under the disk folder."""
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.disk) for f in files)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        path = self._strip_protocol(path)
        if self.used() + len(value) > self.capacity:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
        return super().pipe_file(path, value, **kwargs)


def register() -> None:
    fsspec.register_implementation(PROTOCOL, FullDiskFileSystem, clobber=True)
