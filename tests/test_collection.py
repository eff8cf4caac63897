"""Runs over collections (jaxkp.collection, `python -m jaxkp predict --jsonl`): sharding,
resuming after a crash, worker processes, unreadable files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from jaxkp.collection import expand, parse_shard, recorded_paths, take_shard
from photos import ASTRONAUT, five_faces, large_and_small_heads

ROOT = Path(__file__).resolve().parent.parent


def predict(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jaxkp", "predict", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of four photos (one with five faces) and two unreadable files, one in a subfolder."""
    folder = tmp_path_factory.mktemp("collection")
    (folder / "nested").mkdir()
    for name in ("a.png", "c.png", "nested/d.png"):
        (folder / name).write_bytes(ASTRONAUT.read_bytes())
    five_faces(folder / "b.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "nested" / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not a photo, not listed")
    return folder


def test_inputs_are_sorted_once_and_shards_split_them(photos):
    paths = expand([photos, photos / "a.png"])
    assert [str(p.relative_to(photos)) for p in paths] == ["a.png", "b.png", "broken.jpg", "c.png",
                                                           "nested/d.png", "nested/empty.png"]
    parts = [take_shard(paths, index, 4) for index in range(4)]
    assert sorted(sum(parts, []), key=str) == paths and sum(map(len, parts)) == len(paths)
    assert take_shard(list(reversed(paths)), 1, 4) == parts[1]  # the same part whatever order came in
    assert parse_shard("3/8") == (3, 8)
    for text in ("8/8", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(text)


def test_a_half_written_last_line_is_cut_off_on_resume(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text('{"path": "a.png", "faces": []}\n{"path": "b.png", "error": "bad"}\n{"path": "c.p')
    assert recorded_paths(out) == {"a.png", "b.png"}
    assert out.read_text().endswith('"bad"}\n')
    assert recorded_paths(tmp_path / "missing.jsonl") == set()


@pytest.mark.slow
def test_jsonl_in_shards_with_workers_then_resumed_after_a_crash(photos, tmp_path, capsys):
    first, second = tmp_path / "0.jsonl", tmp_path / "1.jsonl"
    run = predict(str(photos), "--jsonl", str(first), "--shard", "0/2", "--workers", "2")
    assert run.returncode == 0, run.stderr
    run = predict(str(photos), "--jsonl", str(second), "--shard", "1/2")
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    assert re.search(r"\d+/\d+ \[[\d:]+<[\d:]+, +[\d.]+(image/s|s/image)\]", run.stderr)  # done, time left, rate
    records = {0: read_jsonl(first), 1: read_jsonl(second)}
    every = [str(p) for p in expand([photos])]
    # Part I holds every second photo from the I-th, in sorted order, unreadable ones as errors.
    for index, part in records.items():
        assert [record["path"] for record in part] == every[index::2]
    by_name = {Path(record["path"]).name: record for record in records[0] + records[1]}
    assert "error" in by_name["broken.jpg"] and "empty" in by_name["empty.png"]["error"]
    assert {name: len(by_name[name]["faces"]) for name in ("a.png", "b.png", "c.png", "d.png")} == \
        {"a.png": 1, "b.png": 5, "c.png": 1, "d.png": 1}
    assert set(by_name["a.png"]["faces"][0]) >= {"box", "score", "keypoints", "pose"}
    assert by_name["a.png"]["image"] == {"width": 512, "height": 512}
    # Same photo, once read by a worker process (part 0) and once in the parent (part 1): same record.
    assert by_name["a.png"]["faces"] == by_name["d.png"]["faces"]
    # A crash in the middle of writing part 1's second line: --resume cuts it off and reads that photo again.
    # (The command's entry point, in this process: the runs above are the command itself.)
    from jaxkp.__main__ import main

    lines = second.read_text().splitlines(keepends=True)
    second.write_text(lines[0] + lines[1][:25])
    capsys.readouterr()
    assert main(["predict", str(photos), "--jsonl", str(second), "--shard", "1/2"]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["predict", str(photos), "--jsonl", str(second), "--shard", "1/2", "--resume"]) == 0
    resumed = capsys.readouterr().err
    assert "1 image(s) already in" in resumed and "2 to go" in resumed
    assert read_jsonl(second) == [json.loads(line) for line in lines]
    assert [record["path"] for record in read_jsonl(second)] == every[1::2]


def test_resume_needs_jsonl(capsys):
    from jaxkp.__main__ import main  # the command's entry point: argparse exits with 2

    with pytest.raises(SystemExit) as stopped:
        main(["predict", str(ASTRONAUT), "--resume"])
    assert stopped.value.code == 2 and "--resume goes with --jsonl" in capsys.readouterr().err


def test_the_smallest_face_setting_reaches_the_command(tmp_path, capsys):
    """`--smallest-face` leaves out the faces under that share of the short side (here the
    small head of two), and anything that is no share of a side is refused by argparse."""
    from jaxkp.__main__ import main

    path = tmp_path / "heads.png"
    Image.fromarray(large_and_small_heads()).save(path)
    counts = {}
    for setting in ([], ["--smallest-face", "0.15"]):
        assert main(["predict", str(path), "--json", str(tmp_path / "out.json"), *setting]) == 0
        counts[tuple(setting)] = len(json.loads((tmp_path / "out.json").read_text())[0]["faces"])
    assert counts == {(): 2, ("--smallest-face", "0.15"): 1}
    for bad in ("0", "0.7", "nan", "tiny"):
        with pytest.raises(SystemExit) as stopped:
            main(["predict", str(path), "--smallest-face", bad])
        assert stopped.value.code == 2 and "--smallest-face" in capsys.readouterr().err
