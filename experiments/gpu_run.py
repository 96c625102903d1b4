"""The GPU check: the default recipe on CUDA (bf16 autocast), DDP over nccl, throughput beside the CPU's.

    python experiments/gpu_run.py --work /tmp/gpu_run --json experiments/gpu_run.json

Every part is a subprocess of the product's own commands, run one after another on one machine:
1. throughput: ``train.py --stage 1`` for --steps steps on ``cuda``, under ``torchrun --standalone
   --nproc_per_node 1`` on ``cuda`` (nccl), and on ``cpu`` (all cores), each with evaluation only at
   the end. Steps/s are read from the run's log.jsonl between the first log line (step 50, after
   start-up and warm-up) and the last (before the final evaluation).
2. the default run: ``train.py --stage 1``, ``train.py --stage 2`` (default budgets, ``--device auto``,
   which picks CUDA) and ``evaluate.py`` on the test and dev splits: wall time of each and the six F1
   cells, to set beside the CPU run's figures in the README.

Order: cuda, ddp_nccl, the default run, cpu (the slowest last). Each part's whole output goes to
WORK/NAME.log; a part that fails is recorded (exit status, the last lines of its output) and the rest
still run. The CPU's own default-run figures are in the README (same windows of runs/stage1/log.jsonl).

What this file does not do: change a default, or choose anything.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Session:
    """Where the runs go, how long each may take, and what was measured so far."""
    work: Path
    json: Path
    timeout: float
    results: dict = field(default_factory=dict)


def run(s: Session, name: str, cmd: list[str]) -> str | None:
    """Run one command from the repository root; its whole output goes to WORK/NAME.log, its wall
    time, status and output's tail to the results (written to --json at once, so a run killed later
    leaves what it measured). -> the command's standard output, or None if it failed."""
    print(f"== {name}: {' '.join(cmd)}", flush=True)
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=s.timeout)
        rc, stdout, out = r.returncode, r.stdout, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:  # its output may come back as bytes even in text mode
        partial = e.stdout or ""
        rc, stdout, out = "timeout", "", partial.decode() if isinstance(partial, bytes) else partial
    log = s.work / f"{name}.log"
    log.write_text(out)
    s.results[name] = {"rc": rc, "wall_s": round(time.perf_counter() - t, 1), "command": " ".join(cmd[1:]),
                       "log": str(log)}
    tail = "\n".join(out.strip().splitlines()[-12:])
    print(tail, flush=True)
    if rc != 0:
        s.results[name]["tail"] = tail
    s.json.write_text(json.dumps(s.results, indent=1))
    return stdout if rc == 0 else None


def steps_per_s(log: Path) -> dict:
    """Steps/s between the first and last log lines of a run (start-up and final evaluation left out)."""
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    lines = [x for x in lines if "elapsed_s" in x]
    first, last = lines[0], lines[-1]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    rate = round((last["step"] - first["step"]) / seconds, 2) if seconds > 0 else None  # one log line
    return {"steps_per_s": rate, "window": [first["step"], last["step"]], "last_loss": last["loss"]}


def throughput_run(s: Session, name: str, prefix: list[str], device: str, short: list[str]) -> None:
    out = s.work / f"runs_{name}"
    if run(s, name, [*prefix, *short, "--device", device, "--out", str(out)]) is not None:
        s.results[name].update(steps_per_s(out / "stage1" / "log.jsonl"))
        print(s.results[name], flush=True)


def default_run(s: Session, py: str, data: str, max_steps: int) -> None:
    """The README's three commands (device auto), then the dev split too."""
    budget, out = (["--max-steps", str(max_steps)] if max_steps else []), str(s.work / "runs")
    ok = all(run(s, f"stage{k}", [py, "train.py", "--stage", str(k), "--data", data, "--out", out, *budget])
             is not None for k in (1, 2))
    for split in ("test", "dev") if ok else ():
        printed = run(s, f"evaluate_{split}", [py, "rmpl.py", "--checkpoint", f"{out}/stage2", "--data",
                                               data, "--split", split, "--json"])
        if printed:
            cells = json.loads(printed.strip().splitlines()[-1])
            s.results[f"evaluate_{split}"]["f1"] = {c: v["f1"] for c, v in cells.items()
                                                   if isinstance(v, dict) and "f1" in v}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="out/gpu_run", help="runs and logs go here")
    p.add_argument("--data", default="", help="a data directory (default: the toy world, generated in WORK/toy)")
    p.add_argument("--json", default="experiments/gpu_run.json")
    p.add_argument("--steps", type=int, default=200, help="steps of each throughput run")
    p.add_argument("--max-steps", type=int, default=0,
                   help="steps of each stage of the default run (0: train.py's default budgets)")
    p.add_argument("--timeout", type=float, default=420, help="seconds allowed to each command")
    args = p.parse_args(argv)
    py, s = sys.executable, Session(Path(args.work).resolve(), Path(args.json), args.timeout)
    s.json.parent.mkdir(parents=True, exist_ok=True)
    s.work.mkdir(parents=True, exist_ok=True)
    data = args.data or str(s.work / "toy")
    import torch  # only for the report: every run is its own process
    s.results["env"] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                        "cpu_threads": torch.get_num_threads()}
    if not args.data:
        run(s, "data", [py, "-m", "toy", "--out", data])
    short = ["--stage", "1", "--data", data, "--max-steps", str(args.steps), "--eval-every",
             str(args.steps), "--dev-docs", "0"]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train.py"]
    throughput_run(s, "cuda", [py, "train.py"], "cuda", short)
    throughput_run(s, "ddp_nccl", torchrun, "cuda", short)
    default_run(s, py, data, args.max_steps)
    throughput_run(s, "cpu", [py, "train.py"], "cpu", short)  # last: the slowest
    s.json.write_text(json.dumps(s.results, indent=1))
    print(json.dumps(s.results, indent=1))
    return s.results


if __name__ == "__main__":
    main()
