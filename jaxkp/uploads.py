"""Reading a file a web client names, as a public server must.

A client of the app names its photo by a path on the server (Gradio's
FileData). Only files that the server itself stored for a client (Gradio's
upload and cache folder) may be read: any other path, whether it exists or
not, is refused with the same message, so nothing about the server's files
leaks. Only regular files are opened, non-blocking, so a device or a FIFO
cannot hold a worker, and at most `max_bytes` are read.
"""

from __future__ import annotations

import os
import stat

NOT_UPLOADED = "this file was not uploaded to the app"


class UploadRefused(ValueError):
    """A path the server will not read. `str()` is the client's message; `reason` is for the log only."""

    def __init__(self, reason: str, size: int | None = None, message: str = NOT_UPLOADED):
        super().__init__(message)
        self.reason = reason
        self.size = size


def uploaded_file(path: str | os.PathLike, upload_root: str | os.PathLike, max_bytes: int) -> str:
    """`path` resolved (symlinks followed), if that is a regular file inside `upload_root`
    of at most `max_bytes`; else UploadRefused. For a reader that needs a path (ffmpeg);
    read_upload also reads it safely."""
    root = os.path.realpath(upload_root)
    try:
        resolved = os.path.realpath(os.fspath(path))
    except (TypeError, ValueError, OSError):  # e.g. a NUL byte in the path
        raise UploadRefused("unusable path") from None
    if os.path.commonpath([resolved, root]) != root or resolved == root:
        raise UploadRefused("outside the upload folder")
    try:
        info = os.stat(resolved)
    except OSError:
        raise UploadRefused("missing") from None
    if not stat.S_ISREG(info.st_mode):
        raise UploadRefused("not a regular file")
    if info.st_size > max_bytes:
        raise UploadRefused("too large", info.st_size, f"this file is too large ({info.st_size / 1e6:.0f} MB; "
                                                        f"the limit is {max_bytes / 1e6:.0f} MB)")
    return resolved


def read_upload(path: str | os.PathLike, upload_root: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of `path` if it resolves (symlinks followed) to a regular file inside
    `upload_root` of at most `max_bytes`; else UploadRefused."""
    resolved = uploaded_file(path, upload_root, max_bytes)
    try:
        # O_NONBLOCK: should the file be swapped for a FIFO after the check, opening it
        # still returns at once; the fstat below then refuses it.
        descriptor = os.open(resolved, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise UploadRefused("cannot open") from None
    with os.fdopen(descriptor, "rb") as handle:
        opened = os.fstat(handle.fileno())
        if not stat.S_ISREG(opened.st_mode):
            raise UploadRefused("not a regular file once opened")
        content = handle.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise UploadRefused("too large", len(content))
    return content

