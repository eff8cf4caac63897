"""Two checkouts' whole pipelines on the same photos, in alternation, side by side.

    git worktree add /tmp/jaxkp-before <previous commit>
    .venv/bin/python benchmarks/side_by_side.py --before /tmp/jaxkp-before --rounds 2 -- \\
        --images $PWD/../shared/data/ibug-300w-train $PWD/../shared/data/youtube-faces-keypoints \\
        --limit 100 --composites 60 --synthetic 640x480 --max-faces 1 --synthetic-count 30

Runs each checkout's own `benchmarks/pipeline_profile.py` with the arguments after `--` (give data folders as
absolute paths) and its own bundled weights, before and after in turn (`--rounds` times each, the order
alternating so that neither always runs first), and prints, per image set, each run's median and mean of the
whole pipeline(photo) and of its CPU time, and the recall of the labelled faces among the faces kept. A machine
whose load changes moves both columns of a round together: compare within a round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run_profile(checkout: Path, profile_args: list[str], out: Path) -> dict[str, dict]:
    """One pipeline_profile run in `checkout`; its sets by title."""
    python = os.environ.get("SIDE_BY_SIDE_PYTHON", sys.executable)
    subprocess.run([python, "benchmarks/pipeline_profile.py", *profile_args, "--json", str(out)], cwd=checkout,
                   check=True, stdout=subprocess.DEVNULL)
    sets = json.loads(out.read_text())
    sets = sets if isinstance(sets, list) else sets.get("sets", [])
    return {summary["title"]: summary for summary in sets}


def figures(summary: dict) -> str:
    whole = [record["ms"]["whole pipeline(photo)"] for record in summary["records"]]
    cpu = [record["ms"]["whole, CPU time of all threads"] for record in summary["records"]]
    recall = summary.get("recall", {}).get("kept")
    load = summary["load_before"][0]
    text = f"{statistics.median(whole):.1f} / {statistics.fmean(whole):.1f} (CPU {statistics.median(cpu):.1f})"
    return text + (f", recall {recall:.3f}" if recall is not None else "") + f", load {load:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/side_by_side.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the earlier commit")
    parser.add_argument("--after", type=Path, default=HERE, help="the later checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("profile_args", nargs=argparse.REMAINDER, help="-- then pipeline_profile.py's arguments")
    args = parser.parse_args(argv)
    profile_args = [a for a in args.profile_args if a != "--"]
    results: dict[str, list[tuple[int, str, dict]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for round_index in range(args.rounds):
            order = [("before", args.before), ("after", args.after)]
            for label, checkout in order if round_index % 2 == 0 else order[::-1]:
                out = Path(scratch) / f"{label}-{round_index}.json"
                for title, summary in run_profile(checkout.resolve(), profile_args, out).items():
                    results.setdefault(title, []).append((round_index, label, summary))
                print(f"round {round_index + 1}: {label} done", file=sys.stderr, flush=True)
    print(f"whole pipeline(photo) per photo, ms: median / mean (CPU median); before = {args.before}, "
          f"after = {args.after}\n")
    print("| image set | round | before | after |\n| --- | --- | --- | --- |")
    for title, runs in results.items():
        for round_index in range(args.rounds):
            cells = {label: figures(summary) for r, label, summary in runs if r == round_index}
            print(f"| {title} | {round_index + 1} | {cells.get('before', '')} | {cells.get('after', '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
