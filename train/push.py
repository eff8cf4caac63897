"""`python -m train.push WORKDIR USER/NAME [--private]`: publish a finished run to the Hub.

Uploads model.safetensors, config.json, metrics.jsonl, loss_curve.png and a
generated model card. The token comes from `hf auth login` or HF_TOKEN.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def push(workdir: Path, repo_id: str, private: bool) -> int:
    from jaxkp.checkpoint import WeightsError
    from jaxkp.hub import PushError, push_to_hub

    try:
        commit = push_to_hub(workdir, repo_id, private=private)
    except (PushError, WeightsError) as error:
        print(f"error: {error} (the local checkpoint in {workdir} is unchanged)", file=sys.stderr)
        return 1
    print(f"pushed {workdir} to {repo_id} at revision {commit}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.push", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("repo_id", metavar="USER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    args = parser.parse_args(argv)
    return push(args.workdir, args.repo_id, args.private)


if __name__ == "__main__":
    sys.exit(main())
