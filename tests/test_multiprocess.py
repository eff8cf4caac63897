"""`python -m train` as two processes on 127.0.0.1, through JAX's multi-process
runtime (gloo collectives on CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hub_server import free_port
from jaxkp import checkpoint

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # each test trains in two processes


def train_command(data_dir: Path, workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "train", "--config", "tiny", "--data-dir", str(data_dir),
            "--workdir", str(workdir), *extra]


def start_processes(data_dir: Path, workdir: Path, *extra: str) -> list[subprocess.Popen]:
    coordinator = f"127.0.0.1:{free_port()}"
    return [subprocess.Popen(train_command(data_dir, workdir, "--coordinator", coordinator, "--num-processes", "2",
                                           "--process-id", str(index), *extra),
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for index in range(2)]


def final_records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_train_as_one_process_with_the_same_global_batch(synthetic_data_dir, tiny_run, tmp_path):
    # The same mesh (two devices) in one process: the same arithmetic, so the same numbers.
    # It runs beside the two processes (each of the three spends much of its time starting).
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    one = subprocess.Popen(train_command(synthetic_data_dir, tmp_path / "one"), cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    processes = start_processes(synthetic_data_dir, tmp_path / "two")
    try:
        outputs = [process.communicate(timeout=300) for process in [*processes, one]]
    finally:
        for process in [*processes, one]:
            process.kill()
    for process, (_, stderr) in zip([*processes, one], outputs):
        assert process.returncode == 0, stderr[-3000:]
    assert "done:" in outputs[0][0] and "done:" not in outputs[1][0]  # process 0 reports and writes
    # One device (the session's tiny run; its first two epochs are this recipe's two, the
    # learning rate being constant): other reduction orders, so float32 rounding, which
    # Adam's steps carry on.
    two, one = (final_records(tmp_path / name) for name in ("two", "one"))
    single = final_records(tiny_run[0])[:2]
    assert [r["epoch"] for r in two] == [1, 2] and [r["epoch"] for r in one] == [1, 2]
    assert [r["epoch"] for r in single] == [1, 2]
    for a, b, c in zip(two, one, single):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-6)
        np.testing.assert_allclose(a["val_loss"], b["val_loss"], rtol=1e-6)
        np.testing.assert_allclose(a["train_loss"], c["train_loss"], rtol=1e-2)
    trained_two, _ = checkpoint.load_weights(tmp_path / "two")
    trained_one, _ = checkpoint.load_weights(tmp_path / "one")
    arrays_one = checkpoint.model_arrays(trained_one)
    for name, value in checkpoint.model_arrays(trained_two).items():
        np.testing.assert_allclose(value, arrays_one[name], rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_killed_process_stops_the_other_with_a_clear_error(synthetic_data_dir, tmp_path):
    workdir = tmp_path / "run"
    processes = start_processes(synthetic_data_dir, workdir, "--epochs", "500", "--heartbeat-timeout", "5")
    try:
        deadline = time.monotonic() + 240
        while not (workdir / "metrics.jsonl").exists():  # both are training
            assert all(process.poll() is None for process in processes)
            assert time.monotonic() < deadline, "no epoch finished within 240 s"
            time.sleep(0.2)
        processes[1].send_signal(signal.SIGKILL)
        _, stderr = processes[0].communicate(timeout=90)  # a hang fails here
    finally:
        for process in processes:
            process.kill()
    assert processes[0].returncode == 1
    assert "lost contact with the other processes" in stderr
    checkpoint.load_weights(workdir)  # the last completed epoch is whole
