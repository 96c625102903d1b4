"""The ablation study of GitHub issue 6: does RMPL's stage-wise, relation-aware recipe help on the toy world?

    python benchmarks/ablation.py                       # 3 seeds, stage 1 1000 + stage 2 300 steps: about an hour
    python benchmarks/ablation.py --seeds 1 --stage1-steps 20 --stage2-steps 10 --data /tmp/tinyw --out /tmp/abl

Rows (one model size, ``small``; every trained row sees S1 + S2 optimizer steps in all, S1 = --stage1-steps,
S2 = --stage2-steps, batch 32, train.py's stage presets otherwise):

    stage2_only   the stage-2 tasks trained from scratch (train.py --stage 1 --tasks <stage-2 tasks>), S1 + S2 steps
    joint         stage-1 and stage-2 tasks in one stage from scratch (all 7 tasks), S1 + S2 steps
    stage1_only   stage 1 alone, S1 + S2 steps, evaluated directly (one-pass extraction)
    no_relation   stage 1 without the relation source (text_event, image_event), S1 steps -> stage 2, S2 steps
    rmpl          stage 1 (S1 steps) -> stage 2 (S2 steps, full fine-tuning: train.py's default)
    rmpl_lora     the same stage-1 run as rmpl -> stage 2 with LoRA r=16 (lr --lora-lr), S2 steps
    keyword       toy_tools.py's keyword baseline (deterministic: one run, no seed)

Every run is scored with ``evaluate.py --json`` on the dev AND the test split (strict protocol, six cells).
Choices must come from dev; the README reports test. Training and scoring run as subprocesses, one at a time
(the machine has 2 cores). The JSON file is rewritten after every finished run, and a run already in it (same
budgets) is skipped, so an interrupted study continues where it stopped. At the end: one markdown table per
split, F1 mean ± sample standard deviation (n - 1) over seeds, and the paired differences rmpl minus each
row (seed by seed: same world, same seed), mean ± std.

What this file does not do: choose anything (no tuning on test), train in-process, or change the product.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import rmpl  # noqa: E402  (the stage task lists, so the rows follow the product's definition)
from toy import ensure_data  # noqa: E402  (the default toy world is generated on first use)
from evaluate import CELLS  # noqa: E402

STAGE1, STAGE2 = rmpl.STAGE_TASKS[1], rmpl.STAGE_TASKS[2]
ROWS = ("stage2_only", "joint", "stage1_only", "no_relation", "rmpl", "rmpl_lora", "keyword")


def sh(cmd: list[str], log: Path) -> str:
    """Run one command from the repo root; stdout is returned, both streams are appended to ``log``."""
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    if r.returncode:
        sys.exit(f"ablation.py: failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout


def train(args, out: Path, stage: int, steps: int, seed: int, *extra: str) -> list[str]:
    """A train.py command. Checkpoints only at the end (--eval-every = steps): the quick dev score costs time."""
    return [sys.executable, "train.py", "--stage", str(stage), "--data", args.data, "--out", str(out),
            "--seed", str(seed), "--max-steps", str(steps), "--eval-every", str(steps), *extra]


def score(args, ckpt: Path, log: Path) -> dict:
    """Strict F1 of the six cells of ``ckpt`` on dev and test."""
    out = {}
    for split in ("dev", "test"):
        res = json.loads(sh([sys.executable, "evaluate.py", "--checkpoint", str(ckpt), "--data", args.data,
                             "--split", split, "--json"], log).strip().splitlines()[-1])
        out[split] = {c: res[c]["f1"] for c in CELLS}
    return out


def finished(ckpt: Path, steps: int) -> bool:
    """A checkpoint of ``steps`` steps exists (train.py writes it only at the last step with --eval-every = steps)."""
    info = ckpt / "rmpl.json"
    return info.exists() and json.loads(info.read_text())["step"] == steps


def run_row(args, row: str, seed: int, work: Path, log: Path) -> dict:
    """Train (if needed) and score one row for one seed -> {"dev": cells, "test": cells}."""
    S1, S2 = args.stage1_steps, args.stage2_steps
    d = work / row / f"seed{seed}"
    if row == "keyword":
        out = {}
        for split in ("dev", "test"):
            pred = work / row / f"keyword_{split}.jsonl"
            pred.parent.mkdir(parents=True, exist_ok=True)
            baseline = ["toy_tools.py", "baseline", args.data, "--split", split, "--pred", str(pred)]
            sh([sys.executable, *baseline], log)
            res = json.loads(sh([sys.executable, "evaluate.py", "--gold", f"{args.data}/m2e2/{split}", "--pred",
                                 str(pred), "--json"], log).strip().splitlines()[-1])
            out[split] = {c: res[c]["f1"] for c in CELLS}
        return out
    if row in ("stage2_only", "joint", "stage1_only"):  # one stage from scratch, the whole budget
        tasks = {"stage2_only": STAGE2, "joint": STAGE1 + STAGE2, "stage1_only": STAGE1}[row]
        sh(train(args, d, 1, S1 + S2, seed, "--tasks", ",".join(tasks)), log)
        return score(args, d / "stage1", log)
    if row == "rmpl_lora":  # stage 2 with LoRA on rmpl's stage-1 model of the same seed
        base = work / "rmpl" / f"seed{seed}" / "stage1"
        if not finished(base, S1):
            sh(train(args, base.parent, 1, S1, seed), log)
        sh(train(args, d, 2, S2, seed, "--init", str(base), "--lora-rank", "16", "--lr", str(args.lora_lr)), log)
        return score(args, d / "stage2", log)
    tasks = ("text_event", "image_event") if row == "no_relation" else STAGE1   # rmpl, no_relation: two stages
    if not finished(d / "stage1", S1):          # rmpl_lora may have trained it already
        sh(train(args, d, 1, S1, seed, "--tasks", ",".join(tasks)), log)
    sh(train(args, d, 2, S2, seed), log)          # --init defaults to {out}/stage1
    return score(args, d / "stage2", log)


def table(results: dict, split: str) -> str:
    """Markdown: one line per row, F1 mean ± std over the seeds that finished (n in the last column)."""
    lines = ["| row | " + " | ".join(c.replace("_", " ") for c in CELLS) + " | seeds |",
             "|---|" + "---|" * (len(CELLS) + 1)]
    for row in ROWS:
        runs = [r[split] for r in results.get(row, {}).values()]
        if not runs:
            continue
        cells = []
        for c in CELLS:
            xs = [r[c] for r in runs]
            sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
            cells.append(f"{statistics.mean(xs):.1f} ± {sd:.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {len(runs)} |")
    return "\n".join(lines)


CONTRASTS = tuple(r for r in ROWS if r not in ("rmpl", "keyword"))  # rmpl minus each, seed by seed


def contrasts(results: dict, split: str) -> str:
    """Markdown: rmpl - row per cell, paired by seed (the same world and seed), mean ± std of the differences.
    A difference whose mean is within about one std of 0 is not told apart from seed noise at n = 3."""
    lines = ["| rmpl minus | " + " | ".join(c.replace("_", " ") for c in CELLS) + " | seeds |",
             "|---|" + "---|" * (len(CELLS) + 1)]
    for row in CONTRASTS:
        seeds = sorted(set(results.get("rmpl", {})) & set(results.get(row, {})))
        if not seeds:
            continue
        cells = []
        for c in CELLS:
            d = [results["rmpl"][k][split][c] - results[row][k][split][c] for k in seeds]
            cells.append(f"{statistics.mean(d):+.1f} ± {statistics.stdev(d) if len(d) > 1 else 0.0:.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {len(seeds)} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/toy", help="data root (train.py layout); default: the toy world")
    p.add_argument("--out", default="runs/ablation", help="where the runs' checkpoints go")
    p.add_argument("--json", default="benchmarks/ablation.json", help="result file, rewritten after every run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    p.add_argument("--stage1-steps", type=int, default=1000)
    p.add_argument("--stage2-steps", type=int, default=300)
    p.add_argument("--lora-lr", type=float, default=1e-3, help="stage-2 lr with LoRA (the README's dev comparison used 1e-3)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    args = p.parse_args(argv)
    rows = args.rows.split(",")
    if set(rows) - set(ROWS):
        p.error(f"--rows: unknown {sorted(set(rows) - set(ROWS))}")
    args.data = str(ensure_data(args.data).resolve())  # subprocesses run from the repo root
    work, out_json = Path(args.out).resolve(), Path(args.json).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    budgets = {"model_size": "small", "batch_size": 32, "stage1_steps": args.stage1_steps,
               "stage2_steps": args.stage2_steps, "single_stage_steps": args.stage1_steps + args.stage2_steps,
               "lora_rank": 16, "lora_lr": args.lora_lr, "seeds": list(range(args.seeds)), "data": args.data}
    state = {"budgets": budgets, "results": {}, "wall_s": {}}
    if out_json.exists():
        old = json.loads(out_json.read_text())
        same = {k: v for k, v in old.get("budgets", {}).items() if k != "seeds"} == {
            k: v for k, v in budgets.items() if k != "seeds"}
        if same:                                   # same study (more or fewer seeds): keep what finished
            state = {**old, "budgets": budgets}
        else:
            print(f"note: {out_json} holds another study (other budgets); it will be overwritten")
    log = work / "ablation.log"
    print("budgets: " + json.dumps(budgets))
    t_study = time.time()
    for seed in range(args.seeds):
        for row in rows:
            if row == "keyword" and seed > 0:
                continue
            key = "-" if row == "keyword" else str(seed)
            if key in state["results"].get(row, {}):
                print(f"{row:12s} seed {key}: done before, skipped")
                continue
            t0 = time.time()
            res = run_row(args, row, seed, work, log)
            state["results"].setdefault(row, {})[key] = res
            state["wall_s"].setdefault(row, {})[key] = round(time.time() - t0, 1)
            out_json.write_text(json.dumps(state, indent=1))
            print(f"{row:12s} seed {key}: {time.time() - t0:6.0f}s | test F1 "
                  + " ".join(f"{res['test'][c]:.1f}" for c in CELLS), flush=True)
    print(f"\nstudy done in {time.time() - t_study:.0f}s this call; results: {out_json}; logs: {log}")
    for split in ("test", "dev"):
        print(f"\n{split} split, strict F1, mean ± std over seeds "
              f"(stage 1 {args.stage1_steps} + stage 2 {args.stage2_steps} steps; single-stage rows "
              f"{args.stage1_steps + args.stage2_steps}):\n")
        print(table(state["results"], split))
        print(f"\n{split} split, paired differences (rmpl minus the row, per seed; mean ± std):\n")
        print(contrasts(state["results"], split))
    return state


if __name__ == "__main__":
    main()
