"""Real sentences: the text pipeline on M2E2's own text with TextEE's five splits.

    python experiments/real_text.py build --split 1 --out data/real/split1   # the --data directory only
    OMP_NUM_THREADS=1 python experiments/real_text.py run --splits 1        # build, train, score split 1
    python experiments/real_text.py run                                      # all five splits, then the table
    python experiments/real_text.py baseline                                 # the trigger-word baseline, 5 splits
    python experiments/real_text.py errors --gold DIR --pred FILE            # what the model writes per gold event
    python experiments/real_text.py triggers --data DIR                      # what a word-level rule can know of dev

``build`` turns the M2E2 text annotations and one TextEE split (``m2e2_split{k}/{train,dev,test}.txt``, sentence
ids) into a train.py ``--data`` directory:

    ace/{train,dev,test}.json     the split's sentences in the JMEE JSON that data.read_jmee reads
    m2e2/{dev,test}/              the dev / test sentences as the five official M2E2 files (evaluate.py's gold):
                                  text_only_event.json holds them; text_multimedia_event.json, the two image
                                  files and crossmedia_coref.txt are empty, and each sentence's `image` list is
                                  emptied, so the image and multimedia cells have no gold and nothing to predict

Gold: like TextEE (data/preprocessing/m2e2/process_m2e2.py reads text_only_event.json alone), only
text_only_event.json: its 6,013 sentences are exactly the ids of the splits. The 38 of them that
text_multimedia_event.json annotates again (with other events) keep text_only's events, so the counts are
TextEE's own (split 1: 748 / 183 / 174 events, 1,120 / 280 / 259 arguments).

``run`` trains the text tasks with the project's train.py and scores the test sentences with evaluate.py.
There is no image and no relation source here (SWiG, MNRE), so of RMPL's recipe the text half remains:

    stage 1  --tasks text_event --tag-weight 20      sentence -> all its events with arguments (unified EE)
    stage 2  --tasks text_mention,text_argument      RMPL's progressive step: mentions, then arguments per event

Both stages, because stage 2 (mention identification, then argument extraction per predicted event) is what
RMPL evaluates and stage 1 is its initialisation. Scores: strict (text event mention = TextEE's Tri-C; text
argument role = TextEE's "Arg-C (attached)", AC+) and ``--unattached-args`` (text argument role = TextEE's Arg-C:
(sentence, event type, argument span, role), trigger offsets not compared). Extraction decodes with rmpl.py's
``--no-event-bias``, chosen per split on its dev from the values given (default 0, 2, 4, 8): most real sentences
have no event, and without a bias the model leaves most event sentences empty (real_text.md, "Why the model learns
so little"). Stage 1 trains the encoder's trigger tagger (train.py --tag-weight, 20 by default here: real_text.md,
section i). TextEE scores every sentence of the
test split, event-free ones included, as strict does (no --keep-events). The budgets (steps, vocabulary,
prompt length) are flags, saved in the result JSON; choose them on dev (the JSON has dev too), never on test.

``baseline``: for each split, the most frequent event type of each trigger phrase (lower-cased words) of train,
kept when that phrase is a trigger in at least half of its occurrences in train (fixed beforehand, not tuned);
applied to every occurrence of the phrase in test, longest phrase first; no arguments. Scored with evaluate.py.

``run`` trains the splits one after another (one process at a time: the machine has 2 cores); a split whose
``real_text.json`` exists is not trained again, so an interrupted study continues. At the end: the table, F1 mean ±
sample std over the splits run, dev and test.

What this file does not do: change the product (what real text needed is fixed in the product files) or tune
anything on test.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
TEXT_FILE = "text_only_event.json"
SPLITS = ("train", "dev", "test")
# what read_jmee / read_m2e2 read of a record (parse fields, sentence offsets and image lists are left out)
KEEP = ("sentence_id", "words", "golden-entity-mentions", "golden-event-mentions")


# ----------------------------------------------------------------------------- build
def read_split(textee: Path, k: int) -> dict[str, list[str]]:
    """TextEE's split k: {train, dev, test} -> sentence ids (one per line)."""
    d = Path(textee) / f"m2e2_split{k}"
    out = {}
    for s in SPLITS:
        f = d / f"{s}.txt"
        if not f.is_file():
            sys.exit(f"real_text.py: {f}: no such file (--textee DIR holds m2e2_split1..5/{{train,dev,test}}.txt)")
        out[s] = [line.strip() for line in f.read_text().splitlines() if line.strip()]
    return out


def build(m2e2: Path, ids: dict[str, list[str]], out: Path) -> dict:
    """Write the --data directory for the split ``ids`` into ``out``; returns sentences / events / arguments per
    split. An id the annotations do not have, or an id in two splits, stops with a message."""
    path = Path(m2e2) / TEXT_FILE
    if not path.is_file():
        sys.exit(f"real_text.py: {path}: no such file (--m2e2 DIR holds the official annotation files)")
    records = {r["sentence_id"]: r for r in json.loads(path.read_text(encoding="utf-8"))}
    seen = Counter(i for split in ids.values() for i in split)
    twice = [i for i, n in seen.items() if n > 1]
    unknown = [i for i in seen if i not in records]
    if twice or unknown:
        sys.exit(f"real_text.py: split ids: {len(unknown)} not in {path} (e.g. {unknown[:2]}), "
                 f"{len(twice)} in more than one split (e.g. {twice[:2]})")
    counts = {}
    for split, split_ids in ids.items():
        recs = [{k: records[i][k] for k in KEEP} for i in split_ids]
        events = [e for r in recs for e in r["golden-event-mentions"]]
        counts[split] = {"sentences": len(recs), "events": len(events),
                         "arguments": sum(len(e["arguments"]) for e in events)}
        (out / "ace").mkdir(parents=True, exist_ok=True)
        (out / "ace" / f"{split}.json").write_text(json.dumps(recs))
        if split == "train":
            continue
        gold = out / "m2e2" / split
        gold.mkdir(parents=True, exist_ok=True)
        (gold / TEXT_FILE).write_text(json.dumps([{**r, "image": []} for r in recs]))
        (gold / "text_multimedia_event.json").write_text("[]")
        (gold / "image_only_event.json").write_text("{}")
        (gold / "image_multimedia_event.json").write_text("{}")
        (gold / "crossmedia_coref.txt").write_text("")
    return counts


# ----------------------------------------------------------------------------- commands
def sh(cmd: list[str], log: Path) -> tuple[str, float]:
    """Run one command from the repo root -> (stdout, seconds); both streams are appended to ``log``."""
    t0 = time.time()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}\n")
    if r.returncode:
        sys.exit(f"real_text.py: failed (exit {r.returncode}): {' '.join(cmd)}\n{(r.stdout + r.stderr)[-2000:]}")
    return r.stdout, time.time() - t0


def score(gold: Path, pred: Path, log: Path) -> dict:
    """evaluate.py --json on ``pred``: strict and --unattached-args -> their two text cells."""
    out = {}
    for name, switch in (("strict", []), ("unattached_args", ["--unattached-args"])):
        text, _ = sh([sys.executable, "evaluate.py", "--gold", str(gold), "--pred", str(pred), "--json", *switch], log)
        res = json.loads(text.strip().splitlines()[-1])
        out[name] = {c: res[c] for c in ("text_mention", "text_argument")}
    return out


def run_split(args, k: int) -> dict:
    """Build split k, train stage 1 and stage 2 on it, score dev and test -> the split's result (also written
    to RUNS/split{k}/real_text.json). A later call reuses a finished split: its training always, its scores when
    they were made with the same --no-event-bias values."""
    data, runs = (ROOT / args.data / f"split{k}").resolve(), (ROOT / (args.out or "runs/real") / f"split{k}").resolve()
    done = runs / "real_text.json"
    before = json.loads(done.read_text()) if done.exists() else None
    if before and before.get("bias_grid") == args.no_event_bias:
        print(f"split {k}: done before, {done}")
        return before
    runs.mkdir(parents=True, exist_ok=True)
    counts = build(args.m2e2, read_split(args.textee, k), data)
    result = {"split": k, "counts": counts, "budget": vars(args).copy(), "seconds": {}}
    if before:  # trained before: only the scores are redone
        result["seconds"] = {s: before["seconds"][s] for s in ("stage1", "stage2")}
    else:
        train_split(args, data, runs, result)
    predict_split(args, data, runs, result)
    result["seconds"]["total"] = round(sum(result["seconds"].values()), 1)
    done.write_text(json.dumps(result, indent=1))
    print(f"split {k}: {result['seconds']['total']:.0f} s; {done}")
    return result


def train_split(args, data: Path, runs: Path, result: dict) -> None:
    """Stage 1, then stage 2, with train.py; their wall times go into result["seconds"]."""
    common = ["--data", str(data), "--out", str(runs), "--seed", str(args.seed), "--batch-size", str(args.batch_size),
              "--log-every", "50", "--dev-docs", "0"]
    stages = [(1, args.stage1_steps, ["--tasks", "text_event", "--vocab-size", str(args.vocab_size),
                                      "--max-text-len", str(args.max_text_len), "--tag-weight", str(args.tag_weight)]),
              (2, args.stage2_steps, ["--tasks", "text_mention,text_argument"])]
    for stage, steps, extra in stages:
        if (runs / f"stage{stage}" / "rmpl.json").exists():
            sys.exit(f"real_text.py: {runs}/stage{stage} holds an unfinished study's run (delete {runs} to redo it)")
        print(f"split {result['split']}: stage {stage}, {steps} steps ...", flush=True)
        _, result["seconds"][f"stage{stage}"] = sh(
            [sys.executable, "train.py", "--stage", str(stage), *common, "--max-steps", str(steps),
             "--eval-every", str(steps), *extra], log=runs / "real_text.log")


def predict_split(args, data: Path, runs: Path, result: dict) -> None:
    """Dev predicted and scored at each --no-event-bias value; the value with the best dev text mention F1 (the
    first listed on a tie) is the split's, and test is predicted and scored with it alone."""
    log, by_bias = runs / "real_text.log", {}

    def predict(split: str, bias: float) -> dict:
        pred = runs / f"predictions_{split}_bias{bias:g}.jsonl"  # one file per value: none overwritten
        print(f"split {result['split']}: predicting {split}, no-event bias {bias:g} ...", flush=True)
        _, seconds = sh([sys.executable, "rmpl.py", "--checkpoint", str(runs / "stage2"), "--data", str(data),
                         "--split", split, "--pred-out", str(pred), "--no-event-bias", str(bias), "--json"], log)
        result["seconds"][f"predict_{split}"] = result["seconds"].get(f"predict_{split}", 0) + seconds
        return score(data / "m2e2" / split, pred, log)

    for bias in args.no_event_bias:
        by_bias[bias] = predict("dev", bias)
    chosen = max(args.no_event_bias, key=lambda b: (by_bias[b]["strict"]["text_mention"]["f1"],
                                                   -args.no_event_bias.index(b)))
    result.update(bias_grid=args.no_event_bias, no_event_bias=chosen, dev=by_bias[chosen], test=predict("test", chosen),
                  dev_by_bias={str(b): {c: r["strict"][c]["f1"] for c in ("text_mention", "text_argument")}
                               for b, r in by_bias.items()})


def run(args) -> dict:
    """run_split for each of --splits, then the table: mean ± std over the splits, dev and test."""
    results = {k: run_split(args, k) for k in args.splits}
    summary = summarise(results)
    print(summary_table(summary, "RMPL-mini"))
    return {"splits": results, "summary": summary}


# ----------------------------------------------------------------------------- the baseline
def trigger_counts(records: list[dict]) -> tuple[dict[tuple, Counter], Counter]:
    """Sentences -> ({lower-cased trigger phrase: Counter of its types}, Counter of how often each
    such phrase occurs in the sentences, as a trigger or not)."""
    types = defaultdict(Counter)
    for r in records:
        words = [w.lower() for w in r["words"]]
        for e in r["golden-event-mentions"]:
            types[tuple(words[e["trigger"]["start"]:e["trigger"]["end"]])][e["event_type"]] += 1
    seen, lengths = Counter(), {len(p) for p in types}
    for r in records:
        words = [w.lower() for w in r["words"]]
        seen.update(tuple(words[i:i + n]) for n in lengths for i in range(len(words) - n + 1))
    return types, seen


def trigger_table(records: list[dict], min_rate: float = 0.5) -> dict[tuple, str]:
    """Train sentences -> {lower-cased trigger phrase: its most frequent type}, for phrases that are a trigger in at
    least ``min_rate`` of their occurrences (ties: the type first in sorted order)."""
    types, seen = trigger_counts(records)
    return {p: min(c, key=lambda t: (-c[t], t)) for p, c in types.items()
            if sum(c.values()) >= min_rate * seen[p]}


def trigger_coverage(train: list[dict], dev: list[dict]) -> dict:
    """What a word-level rule can know of dev's gold triggers: each by how often its phrase is a trigger in train
    (never; in at least 1/2 of its train occurrences; 1/5 to 1/2; under 1/5), and how many of dev's occurrences of
    its trigger phrases are triggers there (annotation is sparse: the rest decides context)."""
    types, seen = trigger_counts(train)
    dev_types, dev_seen = trigger_counts(dev)
    out = Counter()
    for phrase, c in dev_types.items():
        known = types.get(phrase, Counter())  # its types in train; empty: never a train trigger
        rate = sum(known.values()) / seen[phrase] if known else None
        key = ("never a train trigger" if rate is None else "train rate >= 1/2" if rate >= 0.5
               else "train rate 1/5 - 1/2" if rate >= 0.2 else "train rate < 1/5")
        out["dev triggers: " + key] += sum(c.values())
        out["dev triggers: same type in train"] += sum(n for t, n in c.items() if known[t])
    out["dev triggers"] = sum(sum(c.values()) for c in dev_types.values())
    out["dev occurrences of those phrases"] = sum(dev_seen[p] for p in dev_types)
    return dict(sorted(out.items()))


def apply_table(table: dict[tuple, str], record: dict) -> list[dict]:
    """Every occurrence of a known phrase in the sentence, longest first, non-overlapping -> events (no arguments)."""
    words, taken, events = [w.lower() for w in record["words"]], set(), []
    for phrase in sorted(table, key=lambda p: (-len(p), p)):
        n = len(phrase)
        for i in range(len(words) - n + 1):
            if tuple(words[i:i + n]) == phrase and not taken & set(range(i, i + n)):
                taken |= set(range(i, i + n))
                events.append({"event_type": table[phrase], "trigger": {"start": i, "end": i + n}, "arguments": []})
    return sorted(events, key=lambda e: e["trigger"]["start"])


def baseline(args) -> dict:
    """The trigger-word baseline on each of --splits, scored on dev and test; mean ± std over splits."""
    out_dir = (ROOT / (args.out or "runs/real/baseline")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / "real_text.log"
    results = {}
    for k in args.splits:
        data = out_dir / f"split{k}"
        build(args.m2e2, read_split(args.textee, k), data)
        train = json.loads((data / "ace" / "train.json").read_text())
        table = trigger_table(train)
        results[k] = {"phrases": len(table)}
        for split in ("dev", "test"):
            gold = data / "m2e2" / split
            pred = data / f"baseline_{split}.jsonl"
            recs = json.loads((gold / TEXT_FILE).read_text())
            pred.write_text("".join(json.dumps({"sentence_id": r["sentence_id"], "events": apply_table(table, r)})
                                    + "\n" for r in recs))
            results[k][split] = score(gold, pred, log)
    summary = summarise({k: {s: r[s] for s in ("dev", "test")} for k, r in results.items()})
    (out_dir / "baseline.json").write_text(json.dumps({"splits": results, "summary": summary}, indent=1))
    print(summary_table(summary, "trigger-word baseline"))
    return {"splits": results, "summary": summary}


def summarise(results: dict) -> dict:
    """{split k: {dev/test: {protocol: {cell: {f1, ...}}}}} -> {dev/test: {protocol: {cell: (mean, std, n)}}}."""
    out = {}
    for s in ("dev", "test"):
        for proto in ("strict", "unattached_args"):
            for cell in ("text_mention", "text_argument"):
                f1 = [r[s][proto][cell]["f1"] for r in results.values()]
                std = statistics.stdev(f1) if len(f1) > 1 else 0.0
                out.setdefault(s, {}).setdefault(proto, {})[cell] = (round(statistics.mean(f1), 2), round(std, 2),
                                                                     len(f1))
    return out


def summary_table(summary: dict, name: str) -> str:
    lines = [f"| {name} | split | text mention (Tri-C) | text argument, strict (AC+) | text argument, "
             f"--unattached-args (Arg-C) |", "|---|---|---|---|---|"]
    for s in ("dev", "test"):
        cell = lambda proto, c: "{:.1f} ± {:.1f} (n={})".format(*summary[s][proto][c])
        lines.append(f"| | {s} | {cell('strict', 'text_mention')} | {cell('strict', 'text_argument')} | "
                     f"{cell('unattached_args', 'text_argument')} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- errors
def mention_errors(gold_records: list[dict], pred_lines: list[dict]) -> dict:
    """Each gold text event mention -> what the prediction of its sentence holds for it: the same type and
    trigger (right), the trigger with another type (wrong type), an overlapping trigger of its type (wrong span),
    nothing for the whole sentence (sentence empty), or none of these (missed). Each predicted mention that
    matches no gold one: in a sentence with no gold event, or in one with events."""
    pred = {p["sentence_id"]: p["events"] for p in pred_lines if "events" in p and "sentence_id" in p}
    out = Counter()
    for r in gold_records:
        gold = {(e["trigger"]["start"], e["trigger"]["end"], e["event_type"]) for e in r["golden-event-mentions"]}
        found = {(e["trigger"]["start"], e["trigger"]["end"], e["event_type"])
                 for e in pred.get(r["sentence_id"], [])}
        for s, e, t in gold:
            if (s, e, t) in found:
                out["gold: right"] += 1
            elif not found:
                out["gold: sentence empty"] += 1
            elif any((s, e) == (a, b) for a, b, _ in found):
                out["gold: wrong type"] += 1
            elif any(t == u and a < e and s < b for a, b, u in found):
                out["gold: wrong span"] += 1
            else:
                out["gold: missed"] += 1
        extra = len(found - gold)
        out["pred: extra, no-event sentence" if not gold else "pred: extra, event sentence"] += extra
        out["sentences with gold events"] += bool(gold)
        out["... of which predicted empty"] += bool(gold) and not found
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    q = sub.add_parser("errors", help="count what a prediction file writes for each gold text event")
    q.add_argument("--gold", required=True, help="a m2e2/{dev,test} directory that build wrote")
    q.add_argument("--pred", required=True, help="rmpl.py's --pred-out file")
    q = sub.add_parser("triggers", help="what a word-level rule can know of dev's triggers (real_text.md, g)")
    q.add_argument("--data", required=True, help="a directory that build wrote")
    for name in ("build", "run", "baseline"):
        q = sub.add_parser(name)
        q.add_argument("--m2e2", default=str(SHARED / "m2e2"), help="the official M2E2 annotation files")
        q.add_argument("--textee", default=str(SHARED / "textee"), help="TextEE's m2e2_split1..5 directories")
        q.add_argument("--out", help="build: the --data directory (default data/real/split{k}); run: runs go "
                                     "to OUT/split{k} (default runs/real); baseline: its directory (default "
                                     "runs/real/baseline)")
        if name == "build":
            q.add_argument("--split", type=int, default=1, choices=range(1, 6), help="TextEE split 1..5")
            continue
        q.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3, 4, 5], choices=range(1, 6),
                       help="TextEE splits (default all five)")
        if name == "run":
            q.add_argument("--data", default="data/real", help="the --data directories are built in "
                                                               "DATA/split{k} (default %(default)s)")
            q.add_argument("--stage1-steps", type=int, default=1500)
            q.add_argument("--stage2-steps", type=int, default=500)
            q.add_argument("--batch-size", type=int, default=32)
            q.add_argument("--vocab-size", type=int, default=4000,
                           help="tokenizer size: 1.44 pieces per word on split 1's dev at 4,000, 1.75 at 2,000")
            q.add_argument("--max-text-len", type=int, default=256,
                           help="prompt positions; longer prompts are cut and counted")
            q.add_argument("--seed", type=int, default=0)
            q.add_argument("--tag-weight", type=float, default=20.0,
                           help="train.py --tag-weight, the encoder's trigger tagging (real_text.md, section i)")
            q.add_argument("--no-event-bias", type=float, nargs="+", default=[0.0, 2.0, 4.0, 8.0],
                           help="rmpl.py --no-event-bias values to try on each split's dev; the best there is "
                                "used on its test (real_text.md: one value chosen on split 1 dev did not carry "
                                "to split 2)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.command == "errors":
        gold = json.loads(Path(args.gold, TEXT_FILE).read_text())
        lines = [json.loads(line) for line in Path(args.pred).read_text().splitlines() if line.strip()]
        counts = mention_errors(gold, lines)
        print(json.dumps(counts, indent=1))
        return counts
    if args.command == "triggers":
        if not Path(args.data, "ace", "train.json").is_file():
            sys.exit(f"real_text.py: no ace/train.json in {args.data} (a directory that build writes)")
        read = lambda split: json.loads(Path(args.data, "ace", f"{split}.json").read_text())
        counts = trigger_coverage(read("train"), read("dev"))
        print(json.dumps(counts, indent=1))
        return counts
    if not Path(args.m2e2, TEXT_FILE).is_file():
        sys.exit(f"real_text.py: no {TEXT_FILE} in {args.m2e2} (pass --m2e2 DIR)")
    if args.command == "build":
        out = Path(args.out or f"data/real/split{args.split}")
        counts = build(args.m2e2, read_split(args.textee, args.split), out)
        print(json.dumps(counts))
        return counts
    return run(args) if args.command == "run" else baseline(args)


if __name__ == "__main__":
    main()
