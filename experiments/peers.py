"""Write published M2E2 systems' output files as evaluate.py's prediction format (JSON Lines).

    python experiments/peers.py mmutf ../shared/data/peers --out mmutf.jsonl
    python experiments/peers.py unicl ../shared --out unicl.jsonl
    python experiments/peers.py gold ../shared/data/m2e2 --out gold.jsonl   # the gold itself: scores 100
    python evaluate.py --gold ../shared/data/m2e2 --pred mmutf.jsonl

The peers publish their predictions in their own formats; these converters keep evaluate.py free of
them. tests/test_conformance.py scores their output and pins the README's figures.
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from data import read_m2e2  # noqa: E402
from schema import EVENT_TYPES  # noqa: E402


def gold_lines(gold):
    """The gold written as a prediction file (image ids with .jpg, which must be stripped)."""
    for s in gold.sentences.values():
        yield {"sentence_id": s.id, "events": [
            {"event_type": e.event_type, "trigger": {"start": e.trigger.start, "end": e.trigger.end},
             "arguments": [{"role": a.role, "start": a.target.start, "end": a.target.end} for a in e.arguments]}
            for e in s.events]}
    for i in gold.images.values():
        yield {"image_id": i.id + ".jpg", "events": [
            {"event_type": e.event_type,
             "arguments": [{"role": a.role, "bbox": [a.target.x1, a.target.y1, a.target.x2, a.target.y2]}
                           for a in e.arguments]} for e in i.events]}
    for x in gold.links:
        yield {"sentence_id": x.sentence_id, "image_id": x.image_id, "event_type": x.event_type}


def mmutf_lines(peers):
    """MMUTF: text {"wnd_id", "start", "end", "event_type"} per line; images {"wnd_id", "trigger": type} per
    line; coref a JSON list of [sentence_id, image_id, type]."""
    for line in (peers / "mmutf_text_triggers.json").read_text().splitlines():
        r = json.loads(line)
        yield {"sentence_id": r["wnd_id"],
               "events": [{"event_type": r["event_type"], "trigger": {"start": r["start"], "end": r["end"]}}]}
    for line in (peers / "mmutf_img_triggers.json").read_text().splitlines():
        r = json.loads(line)
        yield {"image_id": r["wnd_id"], "events": [{"event_type": r["trigger"]}]}
    for sid, iid, t in json.loads((peers / "mmutf_coref_triggers.json").read_text()):
        yield {"sentence_id": sid, "image_id": iid, "event_type": t}


def unicl_lines(shared):
    """UniCL conll: one block per sentence record in file order (text_only, then text_multimedia), one token
    per line, `B-<Subtype>` tags in the 3rd column with '_' for '-' (Arrest_Jail). One-token triggers."""
    names = {t.split(":")[1].replace("-", "_"): t for t in EVENT_TYPES}
    m2e2 = shared / "data" / "m2e2"
    records = [r for name in ("text_only_event.json", "text_multimedia_event.json")
               for r in json.loads((m2e2 / name).read_text())]
    blocks = (shared / "data" / "peers" / "unicl_predict_ref.conll").read_text().strip("\n").split("\n\n")
    assert len(blocks) == len(records) == 6205
    for record, block in zip(records, blocks):
        tags = [line.split()[2] for line in block.split("\n")]
        assert len(tags) == len(record["words"]), record["sentence_id"]
        yield {"sentence_id": record["sentence_id"],
               "events": [{"event_type": names[tag[2:]], "trigger": {"start": k, "end": k + 1}}
                          for k, tag in enumerate(tags) if tag.startswith("B-")]}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("system", choices=("mmutf", "unicl", "gold"))
    p.add_argument("directory", help="mmutf: the peers' directory; unicl: the shared directory (it reads "
                                     "the M2E2 text files beside the peers' file); gold: an M2E2 directory")
    p.add_argument("--out", help="write the JSON Lines here, only once all of them are made (default: "
                                 "standard output)")
    a = p.parse_args(argv)
    d = Path(a.directory)
    try:  # every line is made before anything is written: a failure leaves no partial file
        text = "".join(json.dumps(line) + "\n" for line in {
            "mmutf": lambda: mmutf_lines(d), "unicl": lambda: unicl_lines(d),
            "gold": lambda: gold_lines(read_m2e2(d))}[a.system]())
    except (OSError, ValueError) as e:  # a missing directory or file, DataError
        print(f"error: {a.system} {d}: {e}", file=sys.stderr)
        sys.exit(2)
    if a.out:
        Path(a.out).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
