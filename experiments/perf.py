"""Performance benchmarks: training MFU, KV-cache speed-up, scorer vs load time, peak memory.

    python experiments/perf.py                               # all four, default sizes; writes experiments/perf.json
    python experiments/perf.py --steps 20 --warmup 2 --only train,scorer --profile

1. train: ``--steps`` optimizer steps of the default stage-1 config (small model, batch 32, the three stage-1
   tasks, the same forward / loss / backward / clip / AdamW calls as train.py's loop, no logging or eval) on
   pre-drawn batches, after ``--warmup`` steps. Tokens = non-pad prompt tokens + 64 patch tokens per image +
   non-pad target tokens. FLOPs are counted by torch.utils.flop_counter.FlopCounterMode over a forward and
   backward pass of the SAME batches (run again after the timing): matmuls, convolutions and attention as
   executed, padding included (attention on CPU: a formula registered below); elementwise ops, norms, softmax outside attention and the optimizer are not
   counted. MFU = counted FLOPs / timed seconds / peak, where peak = best fp32 torch.matmul FLOP/s
   (2 n^3 per n x n product) measured in this process just before. ``--profile``: torch.profiler table.
2. decode: extraction (rmpl.RMPL.extract, both passes) over the M2E2 dev split of --data with the decoder's KV
   cache and without it (Seq2Seq.generate use_cache=False); the predictions must be identical (asserted).
   Models: --checkpoint (default runs/stage2, trained; most outputs are short, as most sentences have no
   event) and a randomly initialised one of the same config, whose outputs run to the length limit
   (max_target_len = 64, the default output length), on the first --random-docs documents (it is slow). Documents/s, generate-only time, lengths.
3. scorer: the real M2E2 gold (--m2e2, default ../shared/data/m2e2) scored against itself written as a
   prediction file: read_m2e2 + load_predictions + score, vs json.load of the five files alone (best of 5),
   plain and with the garbage collector paused as the readers pause it (data.gc_paused).
4. memory: peak resident set size of the three default commands, run whole as subprocesses (stage 1,
   stage 2, then evaluate.py on the test split, whose F1 is kept); --memory-steps N shortens the training
   runs, but a short run peaks lower (922 vs 1,420 MB for stage 1 at 50 steps). Each command runs under a
   small Python wrapper that reads its own child's ru_maxrss with os.wait4: measured from this process
   directly, Linux would report this (large) process's RSS at fork time for every child.

What this file does not do: change the product, or tune anything.
"""
from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import data  # noqa: E402
import tensors  # noqa: E402
import evaluate  # noqa: E402
import model as M  # noqa: E402
import rmpl  # noqa: E402
import tasks  # noqa: E402
import schema as S  # noqa: E402
import toy  # noqa: E402
import train  # noqa: E402
from torch.utils.flop_counter import (FlopCounterMode, register_flop_formula, sdpa_backward_flop_count,  # noqa: E402
                                      sdpa_flop_count)

# FlopCounterMode knows the CUDA attention kernels but not the CPU one F.scaled_dot_product_attention runs here,
# so attention would count as 0. Same formulas as for flash attention: 4 B H Lq Lk D forward (QK^T and AV),
# 2.5x that backward; masked (causal, padding) positions count in full, as the kernel is charged for them.
@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
def _sdpa_cpu(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


@register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    """Best fp32 FLOP/s of an n x n @ n x n torch.matmul (2 n^3 FLOPs), all of torch's threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = min(_timed(lambda: torch.matmul(a, b)) for _ in range(reps))
    return 2 * n ** 3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_train(args, tmp: Path) -> dict:
    cfg = train.parse_args(["--stage", "1", "--data", args.data, "--out", str(tmp), "--device", "cpu"])
    train.set_seed(cfg.seed)
    src = train.load_data(cfg)
    net, tok = train.new_network(cfg, src)
    net.train()
    c = net.cfg
    built = tasks.build_tasks(tasks.STAGE_TASKS[1], src.ace["train"], src.swig["train"], src.mnre["train"])
    enc = {t: [tensors.encode_example(e, tok, c.image_size, c.max_text_len, c.max_target_len) for e in exs]
           for t, exs in built.items()}
    sampler = tensors.TaskSampler(enc, tasks.task_sampling_weights(enc), cfg.batch_size, seed=cfg.seed)
    batches = [next(sampler) for _ in range(args.warmup + args.steps)]
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    device, n_patch = torch.device("cpu"), (c.image_size // c.patch_size) ** 2

    def fwd_bwd(items):
        loss, _ = tasks.multitask_loss(*M.example_losses(net, items, device))
        loss.backward()

    def step(items):
        fwd_bwd(items)
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)

    peak = matmul_peak(args.matmul_n)
    for items in batches[:args.warmup]:
        step(items)
    timed = batches[args.warmup:]
    seconds = _timed(lambda: [step(items) for items in timed])
    tokens = sum(int((e["input_ids"] != c.pad_id).sum()) + n_patch * bool(e["has_image"])
                 + int((e["target_ids"] != c.pad_id).sum()) for items in timed for e in items)
    with FlopCounterMode(display=False) as counter:  # the same batches again: FLOPs depend only on shapes
        for items in timed:
            fwd_bwd(items)
            opt.zero_grad(set_to_none=True)
    flops = counter.get_total_flops()
    by_op = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    out = {"steps": len(timed), "batch_size": cfg.batch_size, "threads": torch.get_num_threads(),
           "s_per_step": seconds / len(timed), "tokens_per_s": tokens / seconds, "examples_per_s":
           len(timed) * cfg.batch_size / seconds, "model_flops_per_step": flops / len(timed),
           "flops_by_op": by_op, "achieved_flops_per_s": flops / seconds, "matmul_peak_flops_per_s": peak,
           "mfu": flops / seconds / peak}
    if args.profile:
        with torch.profiler.profile() as prof:
            for items in timed[:10]:
                step(items)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    return out


def bench_decode(args) -> dict:
    gold = data.read_m2e2(Path(args.data) / "m2e2" / "dev", images=True)
    trained = rmpl.RMPL.load(args.checkpoint)
    torch.manual_seed(0)
    models = {"trained": trained, "random": rmpl.RMPL(M.Seq2Seq(trained.net.cfg).eval(), trained.tok, trained.tasks)}
    out = {"checkpoint": args.checkpoint}
    for name, model in models.items():
        net, stats = model.net, {}
        docs = sorted({s.doc_id for s in gold.sentences.values()})[:args.random_docs if name == "random" else None]
        sents = [s for s in gold.sentences.values() if s.doc_id in docs]
        imgs = [i for i in gold.images.values() if i.path is not None and i.doc_id in docs]

        def generate(batch, n, allowed=None, use_cache=True, stats=stats, net=net):  # times and counts each call
            t = time.perf_counter()
            ids = M.Seq2Seq.generate(net, batch, n, allowed, use_cache=use_cache)
            stats["generate_s"] = stats.get("generate_s", 0.0) + time.perf_counter() - t
            stats.setdefault("lengths", []).extend(len(r) for r in ids)
            return ids

        def extract(use_cache):
            net.generate = functools.partial(generate, use_cache=use_cache)  # RMPL.run calls net.generate
            stats.clear()
            t = time.perf_counter()
            lines = model.extract(sents, imgs)
            return time.perf_counter() - t, stats["generate_s"], stats["lengths"], lines

        extract(True)  # warm-up; fills the extractor's image cache, so both timed runs read no image file
        runs = {flag: min((extract(flag) for _ in range(args.repeats)), key=lambda r: r[0]) for flag in (True, False)}
        assert runs[True][3] == runs[False][3], f"{name}: predictions differ with and without the KV cache"
        lengths = runs[True][2]
        out[name] = {"documents": len(docs), "sentences": len(sents), "images": len(imgs),
                     "docs_per_s_cache": len(docs) / runs[True][0], "docs_per_s_no_cache": len(docs) / runs[False][0],
                     "speedup": runs[False][0] / runs[True][0], "generate_s_cache": runs[True][1],
                     "generate_s_no_cache": runs[False][1], "generate_speedup": runs[False][1] / runs[True][1],
                     "sequences": len(lengths), "mean_len": sum(lengths) / len(lengths), "max_len": max(lengths),
                     "at_limit": sum(n >= net.cfg.max_target_len - 1 for n in lengths)}
    return out


FILES = ("text_only_event.json", "text_multimedia_event.json", "image_only_event.json",
         "image_multimedia_event.json", "crossmedia_coref.txt")


def bench_scorer(args, tmp: Path) -> dict:
    gold_dir = Path(args.m2e2)
    if not gold_dir.is_dir():
        print(f"scorer: skipped, no M2E2 annotations at {gold_dir} (pass --m2e2 DIR)")
        return {"skipped": f"no {gold_dir}"}
    gold = data.read_m2e2(gold_dir)
    pred_path = tmp / "gold.jsonl"  # the gold as a prediction file, written by the product's own writer
    as_pred = rmpl.prediction_lines(
        S.Predictions({k: list(s.events) for k, s in gold.sentences.items()},
                           {k: list(i.events) for k, i in gold.images.items()}, list(gold.links)))
    pred_path.write_text("".join(json.dumps(line) + "\n" for line in as_pred))

    def load():
        for name in FILES:
            with open(gold_dir / name) as f:
                json.load(f) if name.endswith(".json") else f.read().splitlines()

    def full():
        g = data.read_m2e2(gold_dir)
        return evaluate.score(g, evaluate.load_predictions(pred_path, g))

    result = full()
    assert all(result[c]["f1"] == 100.0 for c in evaluate.CELLS), "the gold does not score 100 against itself"
    # The readers pause the garbage collector (data.gc_paused), so the like-for-like baseline pauses it too. Plain
    # json.load's time swings with the heap this process already holds (0.39 s alone, 0.18 s after training).
    t_load, t_load_paused, t_score = (min(_timed(fn) for _ in range(5)) for fn in (load, data.gc_paused(load), full))
    return {"load_s": t_load, "load_gc_paused_s": t_load_paused, "score_s": t_score, "ratio": t_score / t_load,
            "ratio_gc_paused": t_score / t_load_paused}


WRAPPER = ("import json, os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, "
           "stderr=subprocess.DEVNULL, text=True); out = p.stdout.read(); _, st, ru = os.wait4(p.pid, 0); "
           "print(json.dumps([st, ru.ru_maxrss, out]))")


def bench_memory(args, tmp: Path) -> dict:
    n, py = args.memory_steps, sys.executable
    steps = ["--max-steps", str(n), "--eval-every", str(n)] if n else []  # 0: the default runs, whole
    commands = {"stage1": [py, "train.py", "--stage", "1", "--data", args.data, "--out", str(tmp), *steps],
                "stage2": [py, "train.py", "--stage", "2", "--data", args.data, "--out", str(tmp), *steps],
                "evaluate": [py, "rmpl.py", "--checkpoint", str(tmp / "stage2"), "--data", args.data, "--json"]}
    out, printed = {}, {}
    for name, cmd in commands.items():
        t = time.perf_counter()
        r = subprocess.run([py, "-c", WRAPPER, *cmd], cwd=ROOT, capture_output=True, text=True, check=True)
        status, kib, printed[name] = json.loads(r.stdout)
        if status:
            sys.exit(f"perf.py: memory: {' '.join(cmd)} failed (wait status {status})")
        out[name] = {"peak_rss_mb": kib / 1024, "wall_s": time.perf_counter() - t, "command": " ".join(cmd[1:])}
    scores = json.loads(printed["evaluate"].strip().splitlines()[-1])  # test F1: the README's default-run table
    out["evaluate"]["test_f1"] = {c: scores[c]["f1"] for c in evaluate.CELLS}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=toy.DEFAULT_DATA,
                   help="data root (train.py layout); default: the toy world")
    p.add_argument("--checkpoint", default="runs/stage2", help="trained model for the decoding benchmark")
    p.add_argument("--m2e2", default=str(ROOT.parent / "shared" / "data" / "m2e2"), help="real M2E2 annotations")
    p.add_argument("--json", default="experiments/perf.json")
    p.add_argument("--steps", type=int, default=300, help="timed training steps")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--memory-steps", type=int, default=0,
                   help="training steps of the memory runs (0: the full default runs, about 8 min)")
    p.add_argument("--random-docs", type=int, default=5, help="decoding: documents for the random model")
    p.add_argument("--repeats", type=int, default=2, help="decoding: best of this many runs each way")
    p.add_argument("--only", default="train,decode,scorer,memory")
    p.add_argument("--profile", action="store_true", help="print a torch.profiler table of 10 training steps")
    args = p.parse_args(argv)
    args.data = str(toy.ensure_data(args.data).resolve())
    args.checkpoint = str(Path(args.checkpoint).resolve())
    parts, res = args.only.split(","), {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in [("memory", lambda: bench_memory(args, Path(tmp) / "mem")),
                         ("train", lambda: bench_train(args, Path(tmp) / "train")),
                         ("decode", lambda: bench_decode(args)), ("scorer", lambda: bench_scorer(args, Path(tmp)))]:
            if name in parts:
                t = time.perf_counter()
                res[name] = fn()
                print(f"{name}: done in {time.perf_counter() - t:.1f}s", flush=True)
    Path(args.json).write_text(json.dumps(res, indent=1))
    print(report(res) + f"\nwritten: {args.json}")
    return res


def report(r: dict) -> str:
    lines = ["| benchmark | measured | goal |", "|---|---|---|"]
    if "train" in r:
        t = r["train"]
        lines += [f"| training, stage 1 default ({t['steps']} steps, {t['threads']} threads) | {t['s_per_step']:.3f} s/step, "
                  f"{t['tokens_per_s']:.0f} tokens/s, {t['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s | |",
                  f"| matmul fp32 peak, same process | {t['matmul_peak_flops_per_s'] / 1e9:.1f} GFLOP/s | |",
                  f"| model FLOP utilisation | {100 * t['mfu']:.1f}% | >= 30% |"]
    for name in ("trained", "random"):
        if name in r.get("decode", {}):
            d = r["decode"][name]
            lines.append(f"| decoding, {name} model: docs/s cache / no cache (mean length {d['mean_len']:.1f}) | "
                         f"{d['docs_per_s_cache']:.2f} / {d['docs_per_s_no_cache']:.2f} = {d['speedup']:.2f}x "
                         f"(generate only {d['generate_speedup']:.2f}x) | >= 5x |")
    if "scorer" in r and "skipped" not in r["scorer"]:
        s = r["scorer"]
        lines.append(f"| scoring real M2E2 / json.load alone, garbage collector paused in both | {s['score_s']:.3f} s / "
                     f"{s['load_gc_paused_s']:.3f} s = {s['ratio_gc_paused']:.2f}x | <= 1.5x |")
        lines.append(f"| the same against plain json.load (its GC cost depends on the process's heap) | "
                     f"{s['score_s']:.3f} s / {s['load_s']:.3f} s = {s['ratio']:.2f}x | |")
    for name, m in r.get("memory", {}).items():
        lines.append(f"| peak RSS, {name} (`{m['command']}`, {m['wall_s']:.0f} s) | {m['peak_rss_mb']:.0f} MB | |")
    if "memory" in r:
        lines.append("| test F1 of that run: " + ", ".join(c.replace("_", " ") for c in evaluate.CELLS) + " | "
                     + " / ".join(f"{v:.2f}" for v in r["memory"]["evaluate"]["test_f1"].values()) + " | |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
