"""The upload folder's cap (jaxkp.uploads.FolderCap), on a folder of generated files."""

from __future__ import annotations

import os
import time
from pathlib import Path

from jaxkp.uploads import FolderCap


def write(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def disk_size(*paths: Path) -> int:
    return sum(os.lstat(path).st_blocks * 512 for path in paths)


def test_the_oldest_unused_files_go_first_until_the_folder_is_under_its_cap(tmp_path):
    example = write(tmp_path / "cache" / "example.png", 40_000, age_s=500)
    cap = FolderCap(tmp_path, max_bytes=0)
    cap.keep_present()  # the app's example, there from the start
    oldest = write(tmp_path / "a" / "oldest.jpg", 30_000, age_s=300)
    in_use = write(tmp_path / "b" / "video.mp4", 30_000, age_s=200)
    older = write(tmp_path / "c" / "older.jpg", 30_000, age_s=100)
    newer = write(tmp_path / "d" / "newer.jpg", 30_000, age_s=50)
    arriving = write(tmp_path / "tmpupload", 30_000, age_s=0)  # an upload still being written
    # Room for three of the five files (the example does not count; the upload still arriving does).
    cap.max_bytes = disk_size(in_use, newer, arriving)
    with cap.in_use(in_use):
        freed = cap.prune()
    assert not oldest.exists() and not older.exists()
    assert example.exists() and in_use.exists() and newer.exists() and arriving.exists()
    assert freed == disk_size(in_use) * 2  # two files of that size
    # Under the cap nothing more goes, and a folder that pruning emptied goes once it is old.
    assert cap.prune() == 0 and newer.exists()
    assert (tmp_path / "a").exists()
    os.utime(tmp_path / "a", (time.time() - 120, time.time() - 120))
    write(tmp_path / "e" / "more.jpg", 40_000, age_s=10)
    cap.prune()
    assert not (tmp_path / "a").exists() and not in_use.exists()  # no longer in use: the oldest left


def test_empty_files_are_capped_by_their_number(tmp_path):
    """Empty uploads cost no bytes but each is one more file every prune walks: past
    `max_files` the oldest go, whatever the byte cap."""
    files = [write(tmp_path / f"{index % 7}" / f"empty{index}.jpg", 0, age_s=300 - index) for index in range(40)]
    cap = FolderCap(tmp_path, max_bytes=10**9, max_files=25)
    assert cap.prune() == 0  # no bytes freed...
    assert [path.exists() for path in files] == [False] * 15 + [True] * 25  # ...but the 15 oldest went
    assert FolderCap(tmp_path, max_bytes=10**9).prune() == 0 and sum(p.exists() for p in files) == 25


def test_files_left_from_an_earlier_run_neither_count_nor_block_new_ones(tmp_path):
    """A folder already over both caps when the app starts (an earlier run's 5,000 files
    in Gradio's folder once made every new answer go at once: the client got 403s): what
    was there is kept and not counted, and the new files are capped among themselves."""
    earlier = [write(tmp_path / "old" / f"{index}.jpg", 4096, age_s=1000 + index) for index in range(30)]
    cap = FolderCap(tmp_path, max_bytes=disk_size(*earlier) // 2, max_files=10)
    cap.keep_present()
    answers = [write(tmp_path / "outputs" / f"{index}.jpg", 4096, age_s=100 - index) for index in range(12)]
    cap.prune()
    assert all(path.exists() for path in earlier)
    assert [path.exists() for path in answers] == [False] * 2 + [True] * 10  # the two oldest new files went


def test_young_files_stay_and_an_upload_without_room_is_refused_until_they_age(tmp_path):
    """Oldest out alone let a flood of junk push every other client's photo and answer
    out within seconds. Files younger than `min_age_s` stay; an upload's bytes are counted
    as they arrive and refused while the young files and the other uploads fill the folder."""
    honest = write(tmp_path / "a" / "photo.jpg", 100_000, age_s=5)
    cap = FolderCap(tmp_path, max_bytes=disk_size(honest) * 3, max_files=10, min_age_s=30)
    junk = [write(tmp_path / f"j{index}" / "junk.bin", 100_000, age_s=1) for index in range(3)]
    assert cap.prune() == 0 and honest.exists() and all(path.exists() for path in junk)  # over the cap, all young
    assert cap.begin_upload(files=1) and not cap.take(1_000)  # no room, and nothing may go
    for path in junk[:2]:
        stamp = time.time() - 40
        os.utime(path, (stamp, stamp))  # two junk files age past min_age_s
    room = disk_size(honest)
    assert cap.take(room)  # the oldest go to make the room; the honest photo, younger, stays
    assert honest.exists() and not junk[0].exists() and not junk[1].exists() and junk[2].exists()
    write(tmp_path / "tmpupload", 100_000, age_s=0)  # where Gradio writes what it took
    # What an upload in flight has brought counts: a second one of that size has no room.
    assert cap.begin_upload(files=1) and not cap.take(room)
    (tmp_path / "tmpupload").unlink()  # Gradio moved it; and then the first upload's photo goes
    junk[2].unlink()
    cap.end_upload(files=1)
    cap.end_upload(files=1)
    assert cap.begin_upload(files=1) and cap.take(room)


def test_the_file_cap_counts_the_files_uploads_may_bring(tmp_path):
    files = [write(tmp_path / f"{index}" / "empty.jpg", 0, age_s=1) for index in range(8)]
    cap = FolderCap(tmp_path, max_bytes=10**9, max_files=10, min_age_s=30)
    assert cap.begin_upload(files=2) and not cap.begin_upload(files=1)
    walks = []
    cap._files = lambda walk=cap._files: walks.append(1) or walk()
    cap.end_upload(files=2)  # at once: no walk of the folder
    assert not walks
    # What the upload left counts, though no prune has seen it yet: one file (the other
    # file it might have brought did not come).
    write(tmp_path / "new" / "upload.jpg", 0, age_s=0)
    assert not cap.begin_upload(files=2) and walks  # a prune found 9 files: room for one
    assert cap.begin_upload(files=1) and all(path.exists() for path in files)


def test_a_dropped_uploads_file_counts_and_goes_first(tmp_path):
    """Gradio leaves a dropped upload's temporary file at the folder's top. It once went
    uncounted (700 % of the cap that way); it counts, and goes before any other file once
    nothing writes to it, young or not; a file still being written stays."""
    cap = FolderCap(tmp_path, max_bytes=250_000, max_files=10, min_age_s=30)
    photo = write(tmp_path / "a" / "photo.jpg", 100_000, age_s=1)
    assert cap.begin_upload(files=1)
    dropped = write(tmp_path / "tmpdropped", 100_000, age_s=FolderCap.BEING_WRITTEN_S + 1)
    arriving = write(tmp_path / "tmparriving", 100_000, age_s=0)
    assert cap.prune() > 0  # over the cap: the dropped upload's file goes, the photo and the arriving one stay
    assert not dropped.exists() and arriving.exists() and photo.exists()
    assert not cap.take(100_000)  # the arriving upload's file counts: no room for that much more

