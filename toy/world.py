"""The toy multimedia world: a small, deterministic stand-in for ACE, SWiG, MNRE and M2E2.

The real training sets cannot be downloaded here, so this file generates a world in the real file
formats (layout: docs/real_data.md), and readers, training and the scorer run the same code as on
real data::

    python -m toy --out data/toy --seed 0             # the default world, a few seconds

The world (how its sentences are written: text.py; how its pictures are drawn: pictures.py):

* 12 named people, each in one shirt colour everywhere ("Anna" is always red); unnamed people wear
  greys or beige, police navy with a cap.
* ACE: 60% of sentences tell M2E2 events (15% of those two), 12% only an ACE type M2E2 lacks (the
  reader drops them, e.g. "fired an employee"), the rest none. SWiG: 16 mapped verbs (two per type,
  our own ace_sr_mapping.txt) and 25% unmapped everyday verbs. MNRE: relations between named people
  (couple, siblings, peer, member_of, residence) and, with a box as the tail
  ('/per/misc/present_in'), which figure a name in the text is.
* M2E2 documents: 8-12 sentences, mostly event-free as in M2E2, and 1-3 images. A story told in a
  sentence and shown in an image shares its type and named people (drawn in their colours) and is
  linked; decoy images show the same type with other people (not linked); some events are text-only
  or image-only.

Each source and split has its own random stream, and no training sentence equals an evaluation
sentence, so no evaluation document leaks into training. The same seed and sizes give the same
bytes, which makes the order of the random draws (here, in text.py and in pictures.py) part of the
output: a refactor must keep it.

`ensure_data` is what train.py and the benchmarks call on --data: the default world (the
repository's data/toy, whichever directory they run from) is generated on first use, any other
directory must exist.

`main` is the command line that `python -m toy` runs (__main__.py).

What this file does not do: read the formats back, describe a world or run the keyword baseline
(tools.py, through data.py's readers), score (evaluate.py), or learn anything.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

from schema import EVENT_TYPES, IMAGE_ROLES

from .pictures import ANON, CAST, draw_scene
from .text import NAME_OF, OTHER_ACE, Builder, Story, headed, sentence

TYPES = list(EVENT_TYPES)
# train.py's and the benchmarks' default --data: the repository's data/toy, so that every working
# directory shares one world (a cwd-relative default made a 17 MB copy wherever train.py ran)
DEFAULT_DATA = str(Path(__file__).resolve().parents[1] / "data" / "toy")


@dataclass
class Sizes:
    """How much of each source to write: sentences (ace), images (swig), lines (mnre), documents
    (m2e2)."""
    ace_train: int = 1500
    ace_dev: int = 200
    ace_test: int = 200
    swig_train: int = 1200
    swig_dev: int = 150
    swig_test: int = 150
    mnre_train: int = 2000
    mnre_dev: int = 250
    mnre_test: int = 250
    m2e2_dev: int = 180
    m2e2_test: int = 180


def _dump(path: Path, obj):
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _boxes(cv, roles) -> dict:
    """Role -> [(box, kind)] of the recorded figures in drawing order, slivers dropped."""
    out = {}
    for role, box, _, kind in cv.figs:
        if role in roles and box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            out.setdefault(role, []).append((box, kind))
    return out


# ============================================================================= ACE
def write_ace(rng, path: Path, split: str, n: int, held_out: set):
    """n JMEE sentences, drawn as 60% M2E2 events (15% of them two), 12% only an ACE type M2E2
    lacks, the rest none; a sentence equal to an evaluation sentence (mostly a short filler) is
    drawn again."""
    recs = []
    while len(recs) < n:
        u = rng.random()
        if u < .6:
            pair = rng.random() < .15
            if pair and rng.random() < .3:
                types = ["Conflict:Attack", "Life:Die"]  # 'X shot Y , and Y died'
            else:
                types = rng.sample(TYPES, 1 + pair)
            rec = sentence(rng, [Story(t) for t in types], ace=True)
        else:
            rec = sentence(rng, other=rng.choice(OTHER_ACE) if u < .72 else None, ace=True)
        if tuple(rec["words"]) not in held_out:  # no evaluation sentence in training
            recs.append({"sentence_id": f"toyace-{split}-{len(recs):05d}", **rec})
    _dump(path, recs)


# ============================================================================= SWiG
# verb -> (M2E2 type, {imSitu role: M2E2 image role}), two verbs per type; written out as the
# world's ace_sr_mapping.txt
SWIG_VERBS = {
    "shooting": ("Conflict:Attack",
                 {"agent": "Attacker", "victim": "Target", "firearm": "Instrument"}),
    "aiming": ("Conflict:Attack",
               {"agent": "Attacker", "target": "Target", "weapon": "Instrument"}),
    "protesting": ("Conflict:Demonstrate",
                   {"agent": "Entity", "sign": "Instrument", "opponent": "Police"}),
    "marching": ("Conflict:Demonstrate",
                 {"marchers": "Entity", "item": "Instrument", "observer": "Police"}),
    "talking": ("Contact:Meet", {"agent": "Entity", "listener": "Entity"}),
    "shaking": ("Contact:Meet", {"agent": "Entity", "coagent": "Entity"}),
    "phoning": ("Contact:Phone-Write", {"agent": "Entity", "tool": "Instrument"}),
    "calling": ("Contact:Phone-Write", {"agent": "Entity", "tool": "Instrument"}),
    "arresting": ("Justice:Arrest-Jail",
                  {"agent": "Agent", "suspect": "Person", "tool": "Instrument"}),
    "imprisoning": ("Justice:Arrest-Jail",
                    {"agent": "Agent", "prisoner": "Person", "place": "Instrument"}),
    "dying": ("Life:Die", {"victim": "Victim", "cause": "Instrument"}),
    "collapsing": ("Life:Die", {"agent": "Victim", "tool": "Instrument"}),
    "driving": ("Movement:Transport",
                {"agent": "Agent", "passenger": "Artifact", "vehicle": "Vehicle"}),
    "riding": ("Movement:Transport", {"rider": "Artifact", "vehicle": "Vehicle"}),
    "paying": ("Transaction:Transfer-Money",
               {"agent": "Giver", "payee": "Recipient", "money": "Money"}),
    "buying": ("Transaction:Transfer-Money",
               {"agent": "Giver", "seller": "Recipient", "money": "Money"}),
}
NO_EVENT_VERBS = ("jumping", "eating", "reading", "sleeping", "waving", "standing")  # unmapped
NOUNS = {"person": ("man", "woman", "person"), "police": ("policeman",)}  # imSitu nouns of a figure


def swig_record(rng, name: str, img_dir: Path) -> dict:
    """One SWiG-style image: 75% an event of a mapped verb, else an unmapped everyday verb."""
    if rng.random() < .75:
        t = rng.choice(TYPES)
        driver = t == "Movement:Transport" and rng.random() < .5
        figs = {"Agent": [rng.choice(list(CAST.values()) + list(ANON))]} if driver else {}
        cv = draw_scene(rng, t, figs)
        verbs = [v for v, (vt, _) in SWIG_VERBS.items() if vt == t]  # two verbs per type
        if t == "Justice:Arrest-Jail":
            verb = verbs[any(k == "cage" for *_, k in cv.figs)]  # arresting / imprisoning
        elif t == "Movement:Transport":
            verb = verbs[not driver]  # driving / riding
        else:
            verb = rng.choice(verbs)
        roles = SWIG_VERBS[verb][1]
    else:
        verb = rng.choice(NO_EVENT_VERBS)
        cv = draw_scene(rng, verb=verb)
        roles = {"agent": "agent", "item": "item"}
    found = _boxes(cv, set(roles.values()))
    bb, nouns = {}, {}
    for r, m in roles.items():
        # imSitu roles mapped to one M2E2 role share its boxes in order; the last one takes the
        # rest, as one box around them all
        same = [x for x in roles if roles[x] == m]
        k, got = same.index(r), found.get(m, [])
        mine = got[k:k + 1] if k < len(same) - 1 else got[k:]
        boxes = [b for b, _ in mine]
        bb[r] = [-1, -1, -1, -1]
        if mine:
            bb[r] = [min(b[0] for b in boxes), min(b[1] for b in boxes),
                     max(b[2] for b in boxes), max(b[3] for b in boxes)]
        kind = mine[0][1] if mine else ""
        nouns[r] = rng.choice(NOUNS.get(kind, (kind,)))
    cv.im.save(img_dir / name, format="PNG")
    frames = [dict(nouns) for _ in range(3)]
    return {"verb": verb, "frames": frames, "bb": bb, "height": cv.H, "width": cv.W}


# ============================================================================= MNRE
KB = {("Anna", "Boris"): "/per/per/couple", ("Goran", "Hana"): "/per/per/couple",
      ("Chen", "Dina"): "/per/per/siblings", ("Ivan", "Jana"): "/per/per/siblings",
      ("Emil", "Fatima"): "/per/per/peer", ("Karim", "Lena"): "/per/per/peer",
      ("Anna", "Chen"): "/per/per/peer"}
MEMBER = {"Boris": "Union", "Dina": "Council", "Emil": "Northbank", "Hana": "Union",
          "Karim": "Council", "Lena": "Acme"}
HOME = {"Anna": "Karsk", "Chen": "Velma", "Fatima": "Oston", "Ivan": "Lorn", "Jana": "Prima",
        "Goran": "Tarvik"}
REL_TEXT = {"/per/per/couple": ("{H} and spouse {T}", "{H} and {T} , a married couple ,"),
            "/per/per/siblings": ("{H} and sibling {T}", "{H} and {T} , who are siblings ,"),
            "/per/per/peer": ("{H} and colleague {T}", "{H} , who works with {T} ,"),
            "/per/org/member_of": ("{H} , a member of the {T} ,", "{H} of the {T}"),
            "/per/loc/place_of_residence": ("{H} , who lives in {T} ,", "{H} of {T}"),
            "None": ("{H} and {T}", "{H} , along with {T} ,")}
# Image roles no named person of an MNRE sentence is drawn in.
NOT_A_PERSON = ("Instrument", "Vehicle", "Money", "Place", "Police")
PREDICATES = ("posed for a photo", "spoke to reporters", "waited outside the station",
              "greeted supporters", "attended the ceremony", "were seen at the market")


def _mnre_relation(rng) -> tuple[str, str, str]:
    """(head, tail, label) a sentence states: a fact of the world's KB, or two unrelated names."""
    u = rng.random()
    if u < .45:
        (h, t), label = rng.choice(sorted(KB.items()))
    elif u < .75:
        if u < .6:
            label, facts = "/per/org/member_of", MEMBER
        else:
            label, facts = "/per/loc/place_of_residence", HOME
        h = rng.choice(sorted(facts))
        t = facts[h]
    else:
        h, t = rng.sample(sorted(CAST), 2)
        while (h, t) in KB or (t, h) in KB:
            h, t = rng.sample(sorted(CAST), 2)
        label = "None"
    if rng.random() < .5 and label.startswith("/per/per"):  # person-person relations are symmetric
        h, t = t, h
    return h, t, label


def mnre_example(rng, name: str, img_dir: Path) -> list[dict]:
    """One sentence + picture and its MNRE lines: the relation the sentence states (or None), and
    for the names it mentions, '/per/misc/present_in' to their figure (colour) or 'None' to another
    figure."""
    h, t, label = _mnre_relation(rng)
    b = Builder()
    slots = {"H": headed((h,)), "T": headed((t,))}
    _, args = b.template(rng, rng.choice(REL_TEXT[label]), lambda slot, k: slots[slot])
    spans = dict(args)
    b.lit(rng.choice(PREDICATES))
    names = [n for n in (h, t) if n in CAST]
    if rng.random() < .3:  # a third name, not part of the stated relation
        third = rng.choice([n for n in CAST if n not in names])
        b.lit("with")
        spans["W"] = b.put(headed((third,)))[0]
        names.append(third)
    b.lit(".")
    shown = [n for n in names if rng.random() < .8] or names[:1]
    shirts = [CAST[n] for n in shown]
    if rng.random() < .3:  # an event scene with the named people in it
        t_ = rng.choice(TYPES)
        roles = [r for r in IMAGE_ROLES[t_] if r not in NOT_A_PERSON]
        figs = {}
        for s in shirts:
            figs.setdefault(rng.choice(roles), []).append(s)
        cv = draw_scene(rng, t_, figs)
    else:
        cv = draw_scene(rng, shirts=shirts + [rng.choice(ANON) for _ in range(rng.randint(0, 1))])
    cv.im.save(img_dir / name, format="PNG")
    people = [(box, shirt) for _, box, shirt, kind in cv.figs
              if kind in ("person", "police") and box[2] - box[0] >= 2 and box[3] - box[1] >= 2]
    return _mnre_lines(rng, b.words, spans, label, name, people)


def _mnre_lines(rng, words, spans, label, name, people) -> list[dict]:
    """The stated relation's line, then grounding lines for each name: to its figure, or to
    another one."""
    def ent(span):
        return {"name": " ".join(words[span[0]:span[1]]), "pos": list(span)}

    def line(span, tail, label):
        return {"token": words, "h": ent(span), "t": tail, "img_id": name, "relation": label}

    lines = [line(spans["H"], ent(spans["T"]), label)]
    for span in spans.values():
        n = words[span[0]]
        if n not in CAST:
            continue
        mine = [box for box, s in people if s == CAST[n]]
        other = [box for box, s in people if s != CAST[n]]
        if mine:
            tail = {"name": "person", "bbox": list(mine[0])}
            lines.append(line(span, tail, "/per/misc/present_in"))
        if other and (not mine or rng.random() < .4):
            lines.append(line(span, {"name": "person", "bbox": list(rng.choice(other))}, "None"))
    return lines


# ============================================================================= M2E2
def _doc_sentences(rng) -> tuple[list, list, list]:
    """A document's text: 0-2 stories, each told in 1-2 sentences (one may carry a second, text-only
    event), and event-free fillers mostly naming the stories' people. Returns (stories, [(sentence
    record, [story per event])] in document order, the names the fillers use)."""
    stories = [Story(t) for t in rng.sample(TYPES, rng.choices((0, 1, 2), (.12, .55, .33))[0])]
    mentions = [[st] for st in stories for _ in range(1 + (rng.random() < .2))]
    if mentions and rng.random() < .15:  # a second, text-only event in one sentence
        told = {s.event_type for s in stories}
        mentions[0].append(Story(rng.choice([t for t in TYPES if t not in told])))
    rng.shuffle(mentions)
    recs = [(sentence(rng, m), m) for m in mentions]
    names = sorted({n for st in stories for n in st.names()}) or rng.sample(sorted(CAST), 2)
    n_sent = max(rng.randint(8, 12), len(recs) + 5)
    while len(recs) < n_sent:
        # sometimes an ACE event of a type M2E2 does not annotate
        other = rng.choice(OTHER_ACE) if rng.random() < .15 else None
        recs.append((sentence(rng, other=other, names=names), []))
    rng.shuffle(recs)
    return stories, recs, names


def _doc_plans(rng, stories) -> list[tuple]:
    """What a document's 1-3 pictures show: (event type, figs, linked story). Each story is shown
    with probability .55; with probability .15 a decoy of the same type has other named people (not
    linked); other pictures are image-only events of other types (25%) or event-free."""
    plans = []
    for st in stories:
        if rng.random() < .55:
            plans.append((st.event_type, st.figs(), st))
        if st.names() and rng.random() < .15:  # a decoy: each named person becomes another one
            free = [c for n, c in CAST.items() if n not in st.names()]
            rng.shuffle(free)
            figs = {r: [free.pop() if s in NAME_OF else s for s in ss]
                    for r, ss in st.figs().items()}
            plans.append((st.event_type, figs, None))
    others = [t for t in TYPES if t not in {st.event_type for st in stories}]  # image-only events
    n_img = rng.randint(1, 3)
    while len(plans) < n_img:
        plans.append((rng.choice(others), {}, None) if rng.random() < .25 else (None, {}, None))
    rng.shuffle(plans)
    return plans


def m2e2_doc(rng, did: str, img_dir: Path):
    """One evaluation document, its pictures saved. Returns ([(sentence record, [linked? per
    event])], {image id: (image record, linked?)}, [(sentence id, image id, type)])."""
    stories, recs, names = _doc_sentences(rng)
    plans = _doc_plans(rng, stories)
    images, links = {}, []
    for k, (t, figs, st) in enumerate(plans):
        iid = f"{did}_{k}"
        shirts = () if t else [CAST[n] for n in names if rng.random() < .5]
        cv = draw_scene(rng, t, figs, shirts=shirts)
        cv.im.save(img_dir / f"{iid}.png", format="PNG")
        if t:
            found = _boxes(cv, IMAGE_ROLES[t])
            roles = {r: [["1", *b] for b, _ in found[r]] for r in IMAGE_ROLES[t] if r in found}
            images[iid] = ({"event_type": t, "role": roles}, st is not None)
        if st is not None:
            tellers = [j for j, (_, m) in enumerate(recs) if any(x is st for x in m)]
            links += [(f"{did}_{j}", iid, t) for j in tellers]
    pictures = [f"{did}_{k}.png" for k in range(len(plans))]
    sents = []
    for j, (rec, m) in enumerate(recs):
        linked = [any(x[2] is st for x in plans) for st in m]
        sents.append(({"sentence_id": f"{did}_{j}", **rec, "image": pictures}, linked))
    return sents, images, links


def write_m2e2(rng, d: Path, split: str, n_docs: int) -> set:
    """The five M2E2 files + images of one split; returns the set of its sentences (word tuples)."""
    (d / "images").mkdir(parents=True, exist_ok=True)
    text_only, text_mm, img_only, img_mm, coref = [], [], {}, {}, []
    for k in range(n_docs):
        sents, images, links = m2e2_doc(rng, f"toy-{split}-{k:03d}", d / "images")
        # a sentence with linked and unlinked events is in both text files (as in M2E2)
        for rec, linked in sents:
            events = rec["golden-event-mentions"]
            mm = [e for e, x in zip(events, linked) if x]
            if mm:
                text_mm.append({**rec, "golden-event-mentions": mm})
            if len(mm) < len(events) or not events:
                alone = [e for e, x in zip(events, linked) if not x]
                text_only.append({**rec, "golden-event-mentions": alone})
        for iid, (rec, linked) in images.items():
            (img_mm if linked else img_only)[iid] = rec
        coref += [f"{s}\t{i}.png\t{t}\n" for s, i, t in links]
    for name, obj in (("text_only_event", text_only), ("text_multimedia_event", text_mm),
                      ("image_only_event", img_only), ("image_multimedia_event", img_mm)):
        _dump(d / f"{name}.json", obj)
    (d / "crossmedia_coref.txt").write_text("".join(coref), encoding="utf-8")
    return {tuple(r["words"]) for r in text_only + text_mm}


# ============================================================================= the world
def generate(out_dir, seed: int = 0, **sizes) -> Path:
    """Write the toy world under out_dir (layout: docs/real_data.md); the same seed and sizes give
    the same bytes."""
    sz, out = Sizes(**sizes), Path(out_dir)

    def size(source, split):
        return getattr(sz, f"{source}_{split}")

    def stream(name):  # one independent stream per source and split
        return random.Random(f"toy/{seed}/{name}")

    held_out = set()  # the evaluation sentences, which no training file may contain
    for split in ("dev", "test"):
        m2e2 = out / "m2e2" / split
        held_out |= write_m2e2(stream(f"m2e2/{split}"), m2e2, split, size("m2e2", split))
    for sub in ("ace", "swig/images", "mnre/images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    mapping = [f"{v}\t{r}\t{t.replace(':', '||').replace('-', '|')}\t{m}\n"
               for v, (t, roles) in SWIG_VERBS.items() for r, m in roles.items()]
    (out / "swig" / "ace_sr_mapping.txt").write_text("".join(mapping), encoding="utf-8")
    for split in ("train", "dev", "test"):
        ace = out / "ace" / f"{split}.json"
        write_ace(stream(f"ace/{split}"), ace, split, size("ace", split), held_out)
        rng = stream(f"swig/{split}")
        names = [f"toyswig-{split}-{k:05d}.png" for k in range(size("swig", split))]
        swig = {n: swig_record(rng, n, out / "swig" / "images") for n in names}
        _dump(out / "swig" / f"{split}.json", swig)
        rng, lines, k = stream(f"mnre/{split}"), [], 0
        while len(lines) < size("mnre", split):  # whole examples: a picture's lines stay together
            lines += mnre_example(rng, f"toymnre-{split}-{k:05d}.png", out / "mnre" / "images")
            k += 1
        text = "".join(repr(x) + "\n" for x in lines)
        (out / "mnre" / f"{split}.txt").write_text(text, encoding="utf-8")
    return out


def ensure_data(path, default: str = DEFAULT_DATA) -> Path:
    """--data as given (relative to the working directory when inside it: shorter messages). The
    default world is generated on first use (seed 0, default sizes), wherever the command runs
    from; any other directory must exist, since a mistyped path should not quietly become a fresh
    toy world: otherwise one 'error:' line and exit status 2."""
    root = Path(path)
    if root.is_absolute() and root.is_relative_to(Path.cwd()):
        root = root.relative_to(Path.cwd())
    if root.exists():
        return root
    if root.resolve() != Path(default).resolve():
        print(f"error: --data {root} does not exist (only the default, {default}, is generated on "
              f"first use)", file=sys.stderr)
        sys.exit(2)
    print(f"generating the toy world in {root} "
          f"(first use; `python -m toy --out {root}` does the same) ...", flush=True)
    partial = root.with_name(root.name + ".partial")  # a cut-off generation is never used
    shutil.rmtree(partial, ignore_errors=True)
    generate(partial, seed=0)
    partial.rename(root)
    return root


# The command line's help for each of Sizes' fields, by source (the split fills in the braces).
SIZE_HELP = {"ace": "ACE {} sentences", "swig": "SWiG {} images",
             "mnre": "MNRE {} lines, rounded up to whole pictures", "m2e2": "M2E2 {} documents"}


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m toy",
        description="Generate the toy world (real file formats) into a directory.",
        epilog="Statistics, the keyword baseline and drawings of a world: "
               "python -m toy.tools --help")
    p.add_argument("--out", required=True, help="write the toy world into this directory")
    p.add_argument("--seed", type=int, default=0, help="same seed and sizes = same bytes")
    for f in fields(Sizes):
        source, split = f.name.split("_")
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default, metavar="N",
                       help=SIZE_HELP[source].format(split) + " (default %(default)s)")
    a = p.parse_args(argv)
    t0 = time.time()
    try:
        generate(a.out, a.seed, **{f.name: getattr(a, f.name) for f in fields(Sizes)})
    except OSError as e:  # a file in the way, no permission, a full disk
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote the toy world (seed {a.seed}) to {a.out} in {time.time() - t0:.1f}s")
