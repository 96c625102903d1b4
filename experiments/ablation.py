"""The ablation study (issues 6 and 12): does RMPL's stage-wise, relation-aware recipe help on the toy world?

    python experiments/ablation.py --jobs 2              # 3 seeds at the default budget, two runs at a time
    python experiments/ablation.py --seeds 1 --stage1-steps 20 --stage2-steps 10 --data /tmp/tinyw --out /tmp/abl

Rows (model ``small``, batch 32, train.py's presets otherwise; S1 = --stage1-steps, S2 = --stage2-steps,
both train.py's default budget unless given):

    rmpl                 stage 1 (S1 steps) -> stage 2 (S2 steps, full fine-tuning): the default recipe,
                         links by type
    grounded             rmpl's models, links by the grounding head (rmpl.py --links grounded): the pair
                         rmpl / grounded isolates the link rule (the head is trained in stage 1)
    no_relation          the relation source removed from both stages, same steps (S1, S2): the text and image
                         tasks get the relation task's samples
    no_relation_matched  the relation source removed and each stage shortened by the relation task's sampling
                         share in rmpl (tasks.task_sampling_weights), so the text and image tasks see as many
                         examples as in rmpl: what the relation examples add, not what they take away
    joint                every task of both stages in one stage from scratch, S1 + S2 steps
    stage2_only          the stage-2 tasks trained from scratch, S1 + S2 steps
    stage1_only          stage 1 alone, S1 + S2 steps, evaluated directly (one-pass extraction)
    rmpl_lora            rmpl's stage-1 model of the same seed -> stage 2 with LoRA r=16 (lr --lora-lr)
    keyword              toy/tools.py's keyword baseline (deterministic: one run, no seed)

--rows picks some (default: the issue-12 study, DEFAULT_ROWS). Every run is scored with ``evaluate.py --json``
on the dev AND the test split (strict protocol, six cells); links by type, except in the grounded row.
Choices must come from dev; the README reports test. Training and scoring run as subprocesses; --jobs N runs N
at a time (the rows of a seed are independent, except those reusing rmpl's runs), each process on one thread (the machine has 2 cores; run nothing else meanwhile). The JSON
file is rewritten after every finished run, and a run already in it (same budgets) is skipped, so an
interrupted study continues where it stopped. At the end: one markdown table per split, F1 mean ± sample
standard deviation (n - 1) over seeds, and the paired differences rmpl minus each row (seed by seed: same
world, same seed), mean ± std, with a paired t-test: '*' marks a difference beyond seed noise (|t| above
the two-sided 95% critical value for n - 1 degrees of freedom).

What this file does not do: choose anything (no tuning on test), train in-process, or change the product.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402  (the training sources, for the relation task's sampling share)
import tasks  # noqa: E402  (the stage task lists, so the rows follow the product's definition)
import train  # noqa: E402  (the default budget: train.PRESETS)
# the default toy world is generated on first use
from toy import DEFAULT_DATA, ensure_data  # noqa: E402
from evaluate import CELLS  # noqa: E402

STAGE1, STAGE2 = tasks.STAGE_TASKS[1], tasks.STAGE_TASKS[2]
ROWS = ("rmpl", "grounded", "no_relation", "no_relation_matched", "joint",
        "stage2_only", "stage1_only", "rmpl_lora", "keyword")
DEFAULT_ROWS = ("rmpl", "grounded", "no_relation", "no_relation_matched", "joint",
                "keyword")
AFTER_RMPL = ("grounded", "rmpl_lora")  # reuse rmpl's runs
T_95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}  # two-sided


def without_relation(tasks) -> tuple:
    return tuple(t for t in tasks if t != "relation")


def sh(cmd: list[str], log: Path, threads: int | None) -> str:
    """Run one command from the repo root; stdout is returned, both streams are appended to ``log``."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    if r.returncode:
        raise RuntimeError(f"ablation.py: failed (exit {r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return r.stdout


def train_cmd(args, out: Path, stage: int, steps: int, seed: int, tasks=None, *extra: str) -> list[str]:
    """A train.py command. Checkpoints only at the end (--eval-every = steps): the quick dev score costs time."""
    return [sys.executable, "train.py", "--stage", str(stage), "--data", args.data, "--out", str(out),
            "--seed", str(seed), "--max-steps", str(steps), "--eval-every", str(steps),
            *(["--tasks", ",".join(tasks)] if tasks else []), *extra]


def score(args, ckpt: Path, log: Path, *extra: str) -> dict:
    """Strict F1 of the six cells of ``ckpt`` on dev and test."""
    out = {}
    for split in ("dev", "test"):
        res = json.loads(sh([sys.executable, "rmpl.py", "--checkpoint", str(ckpt), "--data", args.data,
                             "--split", split, "--json", *extra], log, args.threads).strip().splitlines()[-1])
        out[split] = {c: res[c]["f1"] for c in CELLS}
    return out


def finished(ckpt: Path, steps: int) -> bool:
    """A checkpoint of ``steps`` steps exists (train.py writes it only at the last step with --eval-every = steps)."""
    info = ckpt / "rmpl.json"
    return info.exists() and json.loads(info.read_text())["step"] == steps


def relation_share(root: str, stage_tasks) -> float:
    """The relation task's sampling probability in a stage of ``stage_tasks`` (0 without it)."""
    if "relation" not in stage_tasks:
        return 0.0
    src = data.read_sources(root)
    built = tasks.build_tasks(stage_tasks, src.ace.get("train", []), src.swig.get("train", []),
                             src.mnre.get("train", []))
    return tasks.task_sampling_weights(built)["relation"]


def keyword_row(args, work: Path, log: Path) -> dict:
    out = {}
    for split in ("dev", "test"):
        pred = work / "keyword" / f"keyword_{split}.jsonl"
        pred.parent.mkdir(parents=True, exist_ok=True)
        sh([sys.executable, "-m", "toy.tools", "baseline", args.data, "--split", split, "--pred", str(pred)],
           log, args.threads)
        res = json.loads(sh([sys.executable, "evaluate.py", "--gold", f"{args.data}/m2e2/{split}", "--pred",
                             str(pred), "--json"], log, args.threads).strip().splitlines()[-1])
        out[split] = {c: res[c]["f1"] for c in CELLS}
    return out


def two_stages(args, d: Path, seed: int, log: Path, steps=None, tasks=(STAGE1, STAGE2)) -> Path:
    """Stage 1 then stage 2 into ``d`` (stage 1 reused when it finished before); the stage-2 run."""
    (s1, s2), run = steps or (args.stage1_steps, args.stage2_steps), lambda c: sh(c, log, args.threads)
    if not finished(d / "stage1", s1):
        run(train_cmd(args, d, 1, s1, seed, tasks[0]))
    if not finished(d / "stage2", s2):
        run(train_cmd(args, d, 2, s2, seed, tasks[1]))  # --init defaults to {out}/stage1
    return d / "stage2"


def run_row(args, row: str, seed: int, work: Path, log: Path) -> dict:
    """Train (if needed) and score one row for one seed -> {"dev": cells, "test": cells}."""
    S1, S2 = args.stage1_steps, args.stage2_steps
    d = work / row / f"seed{seed}"
    if row == "keyword":
        return keyword_row(args, work, log)
    if row in ("stage2_only", "joint", "stage1_only"):  # one stage from scratch, the whole budget
        tasks = {"stage2_only": STAGE2, "joint": tuple(dict.fromkeys(STAGE1 + STAGE2)),
                 "stage1_only": STAGE1}[row]
        sh(train_cmd(args, d, 1, S1 + S2, seed, tasks), log, args.threads)
        return score(args, d / "stage1", log)
    rmpl_dir = work / "rmpl" / f"seed{seed}"
    base = rmpl_dir / "stage1"
    if row in AFTER_RMPL and not finished(base, S1):   # rows that start from rmpl's stage-1 model
        sh(train_cmd(args, rmpl_dir, 1, S1, seed), log, args.threads)
    if row == "grounded":
        return score(args, two_stages(args, rmpl_dir, seed, log), log, "--links", "grounded")
    if row == "rmpl_lora":  # stage 2 with LoRA on rmpl's stage-1 model of the same seed
        sh(train_cmd(args, d, 2, S2, seed, None, "--init", str(base), "--lora-rank", "16",
                     "--lr", str(args.lora_lr)), log, args.threads)
        return score(args, d / "stage2", log)
    if row == "rmpl":
        return score(args, two_stages(args, rmpl_dir, seed, log), log)
    tasks = without_relation(STAGE1), without_relation(STAGE2)
    steps = (S1, S2) if row == "no_relation" else args.matched_steps
    return score(args, two_stages(args, d, seed, log, steps, tasks), log)


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


def paired(xs: list[float]) -> str:
    """mean ± std of paired differences, '*' when a paired t-test puts the mean beyond seed noise."""
    mean, sd = statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0
    beyond = len(xs) > 1 and (sd == 0 and mean != 0 or sd > 0 and
                              abs(mean) / (sd / len(xs) ** 0.5) > T_95.get(len(xs) - 1, 2.0))
    return f"{mean:+.1f} ± {sd:.1f}{'*' if beyond else ''}"


def contrasts(results: dict, split: str) -> str:
    """Markdown: rmpl - row per cell, paired by seed (the same world and seed), mean ± std of the
    differences; '*' beyond seed noise (paired t-test, 95%, two-sided)."""
    lines = ["| rmpl minus | " + " | ".join(c.replace("_", " ") for c in CELLS) + " | seeds |",
             "|---|" + "---|" * (len(CELLS) + 1)]
    for row in CONTRASTS:
        seeds = sorted(set(results.get("rmpl", {})) & set(results.get(row, {})))
        if not seeds:
            continue
        cells = [paired([results["rmpl"][k][split][c] - results[row][k][split][c] for k in seeds])
                 for c in CELLS]
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {len(seeds)} |")
    return "\n".join(lines)


def units(rows: list[str], seeds: int) -> list[tuple[int, list[str]]]:
    """The study as independent units of work, (seed, rows run in order): a row that reuses rmpl's
    stage-1 run of a seed goes with rmpl; keyword runs once."""
    out = [(0, ["keyword"])] if "keyword" in rows else []
    for seed in range(seeds):
        if "rmpl" in rows or set(AFTER_RMPL) & set(rows):
            out.append((seed, [r for r in rows if r == "rmpl" or r in AFTER_RMPL]))
        out += [(seed, [r]) for r in rows if r not in ("rmpl", "keyword", *AFTER_RMPL)]
    return out


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="data root (train.py layout); default: the toy world")
    p.add_argument("--out", default="runs/ablation", help="where the runs' checkpoints go")
    p.add_argument("--json", default="experiments/ablation.json", help="result file, rewritten after every run")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (each process on one thread)")
    p.add_argument("--stage1-steps", type=int, default=train.PRESETS[1]["max_steps"])
    p.add_argument("--stage2-steps", type=int, default=train.PRESETS[2]["max_steps"])
    p.add_argument("--lora-lr", type=float, default=1e-3, help="stage-2 lr with LoRA (the README's dev comparison used 1e-3)")
    p.add_argument("--rows", default=",".join(DEFAULT_ROWS), help="comma-separated subset of " + ", ".join(ROWS))
    args = p.parse_args(argv)
    args.rows = args.rows.split(",")
    if set(args.rows) - set(ROWS):
        p.error(f"--rows: unknown {sorted(set(args.rows) - set(ROWS))}")
    if args.jobs < 1 or args.seeds < 1:
        p.error("--jobs and --seeds must be at least 1")
    args.threads = 1 if args.jobs > 1 else None
    args.data = str(ensure_data(args.data).resolve())  # subprocesses run from the repo root
    shares = [relation_share(args.data, tasks) for tasks in (STAGE1, STAGE2)]
    args.matched_steps = [max(1, round(n * (1 - share))) for n, share in
                          zip((args.stage1_steps, args.stage2_steps), shares)]
    return args


def load_state(out_json: Path, budgets: dict) -> dict:
    """The results of an earlier call with the same budgets (more or fewer seeds), else a fresh study."""
    state = {"budgets": budgets, "results": {}, "wall_s": {}}
    if out_json.exists():
        old = json.loads(out_json.read_text())
        same = {k: v for k, v in old.get("budgets", {}).items() if k != "seeds"} == {
            k: v for k, v in budgets.items() if k != "seeds"}
        if same:
            state = {**old, "budgets": budgets}
        else:
            print(f"note: {out_json} holds another study (other budgets); it will be overwritten")
    return state


def main(argv=None) -> dict:
    args = parse_args(argv)
    work, out_json = Path(args.out).resolve(), Path(args.json).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    budgets = {"model_size": "small", "batch_size": 32, "stage1_steps": args.stage1_steps,
               "stage2_steps": args.stage2_steps, "single_stage_steps": args.stage1_steps + args.stage2_steps,
               "matched_steps": args.matched_steps, "stage_tasks": [list(STAGE1), list(STAGE2)],
               "lora_rank": 16, "lora_lr": args.lora_lr, "seeds": list(range(args.seeds)), "data": args.data}
    state, lock = load_state(out_json, budgets), threading.Lock()
    print("budgets: " + json.dumps(budgets), flush=True)

    def one_unit(seed: int, rows: list[str]):
        for row in rows:
            key = "-" if row == "keyword" else str(seed)
            if key in state["results"].get(row, {}):
                continue
            t0 = time.time()
            res = run_row(args, row, seed, work, work / f"{row}_seed{key}.log")
            with lock:
                state["results"].setdefault(row, {})[key] = res
                state["wall_s"].setdefault(row, {})[key] = round(time.time() - t0, 1)
                out_json.write_text(json.dumps(state, indent=1))
            print(f"{row:20s} seed {key}: {time.time() - t0:6.0f}s | test F1 "
                  + " ".join(f"{res['test'][c]:.1f}" for c in CELLS), flush=True)

    t_study = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one_unit, seed, rows) for seed, rows in units(args.rows, args.seeds)]
        for f in futures:
            f.result()  # a failed run stops the study with its error
    print(f"\nstudy done in {time.time() - t_study:.0f}s this call; results: {out_json}; logs: {work}")
    for split in ("test", "dev"):
        print(f"\n{split} split, strict F1, mean ± std over seeds (stage 1 {args.stage1_steps} + stage 2 "
              f"{args.stage2_steps} steps; single-stage rows {args.stage1_steps + args.stage2_steps}; "
              f"no_relation_matched {args.matched_steps[0]} + {args.matched_steps[1]}):\n")
        print(table(state["results"], split))
        print(f"\n{split} split, paired differences (rmpl minus the row, per seed; mean ± std, "
              f"* beyond seed noise):\n")
        print(contrasts(state["results"], split))
    return state


if __name__ == "__main__":
    main()
