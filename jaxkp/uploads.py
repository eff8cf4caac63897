"""Reading a file a web client names, as a public server must.

A client of the app names its photo by a path on the server (Gradio's
FileData). Only files that the server itself stored for a client (Gradio's
upload and cache folder) may be read: any other path, whether it exists or
not, is refused with the same message, so nothing about the server's files
leaks. Only regular files are opened, non-blocking, so a device or a FIFO
cannot hold a worker, and at most `max_bytes` are read. FolderCap keeps the
whole folder under a size, whatever clients upload.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import stat
import threading
import time
from collections.abc import Iterator

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



class FolderCap:
    """Keeps what is added to a folder (the app's upload and cache folder) under
    `max_bytes` and `max_files`, whatever clients upload without ever calling an
    endpoint. Past either cap the oldest files go first, except those a request is
    using (`in_use`) and those younger than `min_age_s`; the files kept from the
    start (`keep_present`: the app's own example files, and what an earlier run left)
    are neither counted nor pruned. Uploads are counted as they arrive
    (`begin_upload`, `take`, `end_upload`): when the young files fill the folder, an
    upload is refused, or cut off, rather than let it push out another client's photo
    or answer. The file cap bounds what empty files cost, which the byte cap does not
    see: 40,000 of them (40 requests) once made every prune walk them all, half a core
    while idle."""

    # A file younger than this is not pruned for the caps: a photo waits for the request
    # that names it, an answer's image for its client to fetch it. (Oldest out alone, six
    # requests of 1,000 empty files made every other client's files go within 3.5 s: their
    # images got HTTP 403 and their photos "not uploaded".)
    MIN_AGE_S = 60.0
    # A folder emptied by pruning is removed only once this old: an upload that has
    # just made it may be about to move its file in (Gradio moves it at once).
    EMPTY_FOLDER_MIN_AGE_S = 5.0
    # Gradio writes an arriving upload to a temporary file ("tmp...") at the folder's top,
    # then moves it into a folder of its own. One written to this recently is an upload
    # still arriving (jaxkp.limits.BodyLimit cuts off a body that sends nothing for 10 s)
    # and is never deleted (while its request held it open the disk would not even get its
    # bytes back); any other is a dropped upload's, and goes first, young or not (an upload
    # carries one file, so none is a finished part of an upload still sending the next).
    # All of them count, as files and as the bytes a prune finds.
    BEING_WRITTEN_S = 12.0

    def __init__(self, root: str | os.PathLike, max_bytes: int, max_files: int | None = None,
                 min_age_s: float = MIN_AGE_S):
        self.root = os.path.realpath(root)
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.min_age_s = min_age_s
        self._in_use: collections.Counter[str] = collections.Counter()
        self._kept: set[str] = set()
        self._lock = threading.Lock()
        # What the last prune counted (bytes, files; None before the first); the files the
        # uploads arriving may bring; and the bytes uploads have brought since the last
        # prune began its walk (which it may not have seen).
        self._held: tuple[int, int] | None = None
        self._arriving_files = self._arriving_bytes = 0
        # The files uploads that have ended may have left since the last prune began its walk.
        self._landed_files = 0
        self._prune_lock = threading.Lock()  # one walk at a time, so the last to end saw the most

    @contextlib.contextmanager
    def in_use(self, path: str | os.PathLike) -> Iterator[None]:
        """While the block runs, `path` is not pruned."""
        resolved = os.path.realpath(path)
        with self._lock:
            self._in_use[resolved] += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_use[resolved] -= 1
                if not self._in_use[resolved]:
                    del self._in_use[resolved]

    def keep_present(self) -> None:
        """Never prunes the files there now."""
        self._kept = {path for _, _, path in self._files()}

    def _files(self) -> list[tuple[float, int, str]]:
        found = []
        for folder, _, names in os.walk(self.root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    info = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append((info.st_mtime, info.st_blocks * 512, path))
        return found

    def begin_upload(self, files: int) -> bool:
        """Room for one more upload of up to `files` files (the file cap), counted until
        `end_upload`; False if there is none, even after pruning."""
        for attempt in range(2):
            with self._lock:
                if self._held is not None and (self.max_files is None or self._held[1] + self._arriving_files
                                               + self._landed_files + files <= self.max_files):
                    self._arriving_files += files
                    return True
            if attempt == 0:
                self.prune(room_files=files)
        return False

    def take(self, size: int, may_prune: bool = True) -> bool:
        """Counts `size` more bytes of an arriving upload, if the folder has room for them
        (with `may_prune`, pruning what may go first: it walks the folder); False if not,
        and then they are not counted."""
        for attempt in range(2 if may_prune else 1):
            with self._lock:
                if self._held is not None and self._held[0] + self._arriving_bytes + size <= self.max_bytes:
                    self._arriving_bytes += size
                    return True
            if attempt == 0 and may_prune:
                self.prune(room_bytes=size)
        return False

    def end_upload(self, files: int) -> None:
        """An upload that `begin_upload` let in has ended; what it left in the folder stays
        counted (its bytes and up to `files` files) until a prune finds it on disk. (This
        once pruned at once, a walk of the folder: a flood of small uploads queued walks,
        each upload holding its place among those arriving until its walk ran.)"""
        with self._lock:
            self._arriving_files -= files
            self._landed_files += files

    def prune(self, room_bytes: int = 0, room_files: int = 0) -> int:
        """Deletes the oldest files that nobody is using and that are old enough while
        the files added since the start, with the uploads arriving (and `room_bytes` and
        `room_files` more), are over a cap; returns the bytes freed. The kept files neither
        go nor count: they may be more than a cap (what an earlier run left in the folder),
        and counted, they once made every new file go at once, the app's answers with them."""
        with self._prune_lock:
            return self._prune(room_bytes, room_files)

    def _prune(self, room_bytes: int, room_files: int) -> int:
        with self._lock:
            busy, kept = set(self._in_use), set(self._kept)
            arriving_files = self._arriving_files
            self._arriving_bytes = self._landed_files = 0  # what arrived until now, the walk finds on disk
        now = time.time()
        recent, young = now - self.BEING_WRITTEN_S, now - self.min_age_s
        # Oldest first, a dropped upload's file before any other.
        files = sorted((file for file in self._files() if file[2] not in kept),
                       key=lambda file: (not self._arriving(file[2]), file[0]))
        total, count = sum(size for _, size, _ in files), len(files)
        max_files = math.inf if self.max_files is None else self.max_files
        freed = removed = 0
        for modified, size, path in files:
            if total + room_bytes <= self.max_bytes and count + arriving_files + room_files <= max_files:
                break
            if self._arriving(path):
                if modified > recent:
                    continue  # still being written
            elif modified > young or path in busy:
                continue
            with contextlib.suppress(OSError):
                os.unlink(path)
                total, count = total - size, count - 1
                freed, removed = freed + size, removed + 1
        with self._lock:
            self._held = (total, count)
        if removed:
            self._remove_empty_folders()
        return freed

    def _arriving(self, path: str) -> bool:
        folder, name = os.path.split(path)
        return folder == self.root and name.startswith("tmp")

    def _remove_empty_folders(self) -> None:
        now = time.time()
        for folder, subfolders, names in os.walk(self.root, topdown=False):
            if folder == self.root or names or subfolders:
                continue
            with contextlib.suppress(OSError):
                if now - os.lstat(folder).st_mtime > self.EMPTY_FOLDER_MIN_AGE_S:
                    os.rmdir(folder)

    def watch(self, every_s: float = 2.0) -> threading.Thread:
        """Prunes every `every_s` seconds, in a daemon thread, for the life of the process
        (each upload also prunes as it ends: this catches what else writes there). A prune
        lists the folder: at its 5,000-file cap, every 0.5 s cost 13-16 % of a core idle."""
        def loop() -> None:
            while True:
                time.sleep(every_s)
                try:
                    self.prune()
                except Exception:  # noqa: BLE001 - a pruning error must not end the watch
                    logging.getLogger("jaxkp.app").exception("pruning the upload folder failed")

        thread = threading.Thread(target=loop, name="upload-folder-cap", daemon=True)
        thread.start()
        return thread
