"""One screening run of the vision comparisons: stage 1, stage 2, then the dev scores.

    python experiments/vision_screen.py --out out/screen/x --model '{"vision_layers": 0}' \
        --stage1 "--max-steps 1000" --stage2 "--max-steps 300"

--model: JSON overrides of the ``small`` entry of model.MODEL_SIZES (any ModelConfig field);
--stage1 / --stage2: extra train.py flags. Prints and writes ({out}/screen.json) the six strict dev
F1 cells (--splits dev,test would add test; the screens never did), each stage's wall time and
seconds per step. The comparisons and their figures are in
experiments/vision.md.

What this file does not do: choose anything (on dev or test), or change the product's defaults.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import model as M  # noqa: E402
import rmpl  # noqa: E402
import train  # noqa: E402
from toy import DEFAULT_DATA  # noqa: E402


def score(checkpoint: Path, data: str, split: str) -> dict:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rmpl.main(["--checkpoint", str(checkpoint), "--data", data, "--split", split, "--json"])
    cells = json.loads(buf.getvalue())
    return {k: v["f1"] for k, v in cells.items() if isinstance(v, dict) and "f1" in v}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--model", default="{}", help="JSON overrides of MODEL_SIZES['small']")
    p.add_argument("--stage1", default="", help="extra train.py flags for stage 1")
    p.add_argument("--stage2", default="", help="extra train.py flags for stage 2")
    p.add_argument("--splits", default="dev")
    args = p.parse_args(argv)
    M.MODEL_SIZES["small"].update(json.loads(args.model))
    result = {"args": vars(args)}
    for stage, extra in ((1, args.stage1), (2, args.stage2)):
        t0 = time.time()
        train.main(["--stage", str(stage), "--out", args.out, "--data", args.data,
                    "--dev-docs", "0"] + shlex.split(extra))
        info = json.loads((Path(args.out) / f"stage{stage}" / "rmpl.json").read_text())
        result[f"stage{stage}_s"] = round(time.time() - t0, 1)
        result[f"stage{stage}_s_per_step"] = round(result[f"stage{stage}_s"] / info["step"], 3)
    for split in args.splits.split(","):
        result[split] = score(Path(args.out) / "stage2", args.data, split)
    print(json.dumps(result))
    Path(args.out, "screen.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
