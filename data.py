"""Data: readers for the real source formats, each returning schema.py's records.

    read_jmee    ACE 2005, JMEE-style JSON              -> list[Sentence]  (8 M2E2 types kept)
    read_swig    SWiG JSON + images + ace_sr_mapping    -> list[Image]  (unmapped verbs: no event)
    read_mnre    MNRE dict-literal lines + images       -> list[RelationExample]
    read_m2e2    the five official M2E2 files (+images) -> M2E2(sentences, images, links)
    read_sources a --data DIR (layout: docs/real_data.md)    -> Sources, per split

Readers check what they read and name the file, the record and the problem when it is wrong. They
never import torch: the scorer (evaluate.py) reads M2E2 through this file and starts without it.

What this file does not do: turn records into ids and tensors (tensors.py), decide which examples a
task has (rmpl.py), or score (evaluate.py).
"""
from __future__ import annotations

import ast
import codecs
import functools
import gc
import json
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image as PILImage

from schema import (ACE_TO_M2E2, IMAGE_ROLES, MNRE_LABELS, TEXT_ROLES, Argument, Box, Image,
                    ImageEvent, Link, Relation, RelationExample, Sentence, Span, TextEvent,
                    sr_event_type)

# ============================================================================= readers
# Every reader returns schema records in a canonical order, so that the decoder targets built from
# them are canonical too: events by trigger (start, end, type); arguments by the role's index in
# the type's role list (TEXT_ROLES or IMAGE_ROLES), then by position (span start, end or box
# x1, y1, x2, y2); exact duplicates removed.
#
# Bad input raises DataError naming the file, the record and the problem. The gold reader (M2E2)
# raises on every problem. The training readers (JMEE, SWiG, MNRE) raise when the format itself is
# broken (not JSON, wrong top-level type, a missing field, an image file that is missing or does not
# decode) but skip a record with a bad offset, box, label or word (none, or one the tokenizer cannot
# hold), and say so in one warning per file ("skipped N records: ..."), together with what the
# schema mapping dropped on purpose (other ACE types, roles that are not roles of the type).


class DataError(ValueError):
    """Bad input data; the message reads '{file}: record {id}: {problem}' (or 'line {k}')."""


def _span(start, end, n: int) -> Span:
    """Word offsets [start, end) in a sentence of n words; ValueError unless
    0 <= start < end <= n."""
    if not (type(start) is int and type(end) is int and 0 <= start < end <= n):
        raise ValueError(f"span {start!r}..{end!r} outside a sentence of {n} words")
    return Span(start, end)


def _box(coords, size: tuple[int, int] | None = None) -> Box:
    """[x1, y1, x2, y2] -> Box; ValueError unless 0 <= x1 < x2 and 0 <= y1 < y2, and inside the
    image if its size is known."""
    if len(coords) != 4 or not all(type(v) in (int, float) for v in coords):
        raise ValueError(f"box {coords!r} is not four numbers")
    x1, y1, x2, y2 = coords
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ValueError(f"box {list(coords)} is not 0 <= x1 < x2, 0 <= y1 < y2")
    if size is not None and not (x2 <= size[0] and y2 <= size[1]):
        raise ValueError(f"box {list(coords)} outside the {size[0]}x{size[1]} image")
    return Box(x1, y1, x2, y2)


def _position(target: Span | Box) -> tuple:
    # (start, end) or (x1, y1, x2, y2); astuple deep-copies, slowly
    return tuple(vars(target).values())


def _sort_args(args, roles: tuple[str, ...]) -> tuple[Argument, ...]:
    return tuple(sorted(set(args), key=lambda a: (roles.index(a.role), _position(a.target))))


def _sort_events(events) -> tuple:
    key = lambda e: (e.trigger.start, e.trigger.end, e.event_type,
                     [(a.role, _position(a.target)) for a in e.arguments])
    return tuple(sorted(set(events), key=key))


def _image_size(file: Path, where: str) -> tuple[int, int]:
    """(width, height) of an image file after pillow's verify() (headers and structure; pixels are
    decoded later)."""
    try:
        with PILImage.open(file) as im:
            size = im.size
            im.verify()
    except FileNotFoundError:
        raise DataError(f"{file}: {where}: image file not found") from None
    except Exception as e:  # pillow signals a bad file with many exception types
        raise DataError(f"{file}: {where}: not a readable image "
                        f"({type(e).__name__}: {e})") from None
    return size


def _unique_keys(pairs: list) -> dict:
    """json object_pairs_hook: a key given twice is an error (json.loads would silently keep the
    last record)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        # the rare case: find the key (counting every object cost 30% of read_m2e2)
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"duplicate key {twice!r}")
    return obj


def parse_json(text: str):
    """json.loads for every JSON this project reads (the gold here, predictions in evaluate.py):
    ValueError on a duplicate key and on nesting too deep for Python's parser (json.loads raises
    RecursionError), as on any other bad JSON."""
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _load_json(path: Path, kind: type):
    try:  # utf-8-sig: a byte order mark at the start of the file is skipped (elsewhere: bad JSON)
        data = parse_json(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a duplicate key, too deep
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected a JSON {kind.__name__} at the top level, "
                        f"got {type(data).__name__}")
    return data


def _read_lines(path: Path) -> list[str]:
    """A text file's lines; a byte order mark at the start of the file is skipped."""
    try:
        raw = Path(path).read_bytes().removeprefix(codecs.BOM_UTF8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 "
                        f"(byte {raw[e.start]:#04x})") from None


def encodable(word) -> bool:
    """A word the tokenizer (tensors.py) round-trips unchanged: non-empty, no ' ' or '\u2581', no
    lone surrogate."""
    try:
        return (isinstance(word, str) and word != "" and " " not in word and "\u2581" not in word
                and bool(word.encode()))
    except UnicodeEncodeError:
        return False


def _words(words) -> tuple[str, ...]:
    """A sentence's words: TypeError unless a list of strings (a broken format); ValueError if there
    are none or one the tokenizer cannot hold (empty, or with ' ' or '\u2581'), which a training
    reader skips."""
    try:
        # join: TypeError on a word that is no str
        text = "".join(words) if isinstance(words, list) else None
    except TypeError:
        text = None
    if text is None:
        raise TypeError(f"words must be a list of strings, got {words!r:.80}")
    if not words:
        raise ValueError("a sentence with no words")
    if not (all(words) and encodable(text)):  # one check per sentence; a word only when it fails
        bad = next(w for w in words if not encodable(w))
        raise ValueError(f"word {bad!r} is empty or holds a space")
    return tuple(words)


def _parse_all(path: Path, items, parse, skip_bad: bool, dropped: Counter | None = None) -> list:
    """parse(record) for each (where, record) in items. A broken format (KeyError, TypeError,
    AttributeError) raises DataError naming file and record; so does a bad value (ValueError) unless
    skip_bad, where the record is skipped and counted. DataError from inside (image files) passes
    through. One warning sums up skipped and dropped."""
    out, skipped = [], []
    for where, rec in items:
        try:
            out.append(parse(rec))
        except DataError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            problem = f"missing field {e}" if isinstance(e, KeyError) else str(e)
            if not (skip_bad and type(e) is ValueError):
                raise DataError(f"{path}: {where}: {problem}") from None
            skipped.append(f"{where}: {problem}")
    notes = ([f"skipped {len(skipped)} records: " + "; ".join(skipped[:3])
              + (" ..." if len(skipped) > 3 else "")]
             if skipped else [])
    notes += [f"dropped {n} {what}" for what, n in (dropped or {}).items() if n]
    if notes:
        warnings.warn(f"{path}: " + "; ".join(notes), stacklevel=3)
    return out


def gc_paused(reader):
    """Run ``reader`` with Python's cyclic garbage collector paused. Building records from a large
    parsed JSON file allocates containers by the hundred thousand, and each allocation burst makes
    the collector re-scan the whole (growing) heap (timing: experiments/performance.md). Records
    hold no reference cycles, so nothing is left for it to collect; it is re-enabled (if it was on)
    on return."""
    @functools.wraps(reader)
    def paused(*args, **kwargs):
        was_on = gc.isenabled()
        gc.disable()
        try:
            return reader(*args, **kwargs)
        finally:
            if was_on:
                gc.enable()
    return paused


def strip_ext(name: str) -> str:
    """An image id from a file name: without a .jpg or .png extension (any case). The gold reader
    and the prediction reader (evaluate.py) both use it: "D_0.png" and "D_0" are one image."""
    return name[:-4] if name[-4:].lower() in (".jpg", ".png") else name


# -------------------------------------------------------------- M2E2 (the gold: errors only)
@dataclass
class M2E2:
    """The M2E2 evaluation set: the sentence and image universes (event-free ones included) and the
    309 links."""
    sentences: dict[str, Sentence]
    images: dict[str, Image]
    links: list[Link]


def _m2e2_sentence(rec: dict) -> Sentence:
    words = _words(rec["words"])
    events = []
    for e in rec["golden-event-mentions"]:
        t = e["event_type"]
        if t not in TEXT_ROLES:
            raise ValueError(f"unknown event type {t!r}")
        args = []
        for a in e["arguments"]:
            if a["role"] not in TEXT_ROLES[t]:
                raise ValueError(f"role {a['role']!r} is not a text role of {t}")
            args.append(Argument(a["role"], _span(a["start"], a["end"], len(words))))
        trigger = _span(e["trigger"]["start"], e["trigger"]["end"], len(words))
        events.append(TextEvent(t, trigger, _sort_args(args, TEXT_ROLES[t])))
    images = tuple(strip_ext(name) for name in rec.get("image", []))
    return Sentence(str(rec["sentence_id"]), words, _sort_events(events), images)


def _m2e2_image_event(rec: dict, size: tuple[int, int] | None) -> ImageEvent:
    t = rec["event_type"]
    if t not in IMAGE_ROLES:
        raise ValueError(f"unknown event type {t!r}")
    args = []
    for role, boxes in rec["role"].items():
        if role not in IMAGE_ROLES[t]:
            raise ValueError(f"role {role!r} is not an image role of {t}")
        for flag, *coords in boxes:  # flag "1" = an instance box, "0" = a group box; both are gold
            args.append(Argument(role, _box(coords, size)))
    return ImageEvent(t, _sort_args(args, IMAGE_ROLES[t]))


def _read_m2e2_sentences(d: Path) -> dict[str, Sentence]:
    """M2E2's two text files -> sentences by id; a sentence in both gets the union of events."""
    sentences: dict[str, Sentence] = {}
    for name in ("text_only_event.json", "text_multimedia_event.json"):
        path = d / name
        records = _load_json(path, list)
        items = []
        for i, r in enumerate(records):
            record_id = r.get("sentence_id", i) if isinstance(r, dict) else i
            items.append((f"record {record_id}", r))
        seen = set()
        for (where, _), s in zip(items, _parse_all(path, items, _m2e2_sentence, skip_bad=False)):
            if s.id in seen:
                raise DataError(f"{path}: {where}: sentence id given twice in this file")
            seen.add(s.id)
            old = sentences.get(s.id)
            if old is not None:  # the same sentence annotated in both files: its gold is the union
                if (old.words, old.images) != (s.words, s.images):
                    raise DataError(f"{path}: {where}: occurs in both text files with different "
                                    f"words or images")
                s.events = _sort_events(old.events + s.events)
            sentences[s.id] = s
    return sentences


@gc_paused
def read_m2e2(directory, images: bool = False) -> M2E2:
    """Read the five official M2E2 files in `directory` (docs/predictions.md);
    raise DataError on any problem. A UTF-8 byte order mark at the start of a file is skipped.

    Sentences: the union of text_only_event.json and text_multimedia_event.json; an id in both
    (38 in the real files) must have the same words and images, and its events are the union.
    Images: every image named in a sentence's `image` list plus every image of
    image_only_event.json / image_multimedia_event.json, ids without extension; an event image has
    one ImageEvent with every box (group and instance) as an argument, others have events=().
    Boxes must satisfy 0 <= x1 < x2, 0 <= y1 < y2 (all 1,429 real boxes do). With images=True,
    `directory/images/<id>.jpg` or `.png` is opened where it exists: it must decode, gives
    Image.size and Image.path, and the image's boxes must lie inside it. Links must name a known
    sentence, image and type.
    Entity mentions are not kept (Sentence has no field for them; every argument span is one
    anyway). The real files give 6,167 sentences, 1,297 events, 1,966 arguments, 940 images
    (391 with an event, 1,429 boxes) and 309 links.
    """
    d = Path(directory)
    sentences = _read_m2e2_sentences(d)

    image_records: dict[str, tuple[Path, dict]] = {}
    for name in ("image_only_event.json", "image_multimedia_event.json"):
        path = d / name
        for key, rec in _load_json(path, dict).items():
            if strip_ext(key) in image_records:
                raise DataError(f"{path}: record {key}: image annotated twice")
            image_records[strip_ext(key)] = (path, rec)

    universe: dict[str, Image] = {}
    named = [i for s in sentences.values() for i in s.images]
    for iid in dict.fromkeys(named + list(image_records)):
        files = [d / "images" / f"{iid}{ext}" for ext in (".jpg", ".png")] if images else []
        file = next((f for f in files if f.exists()), None)
        size = _image_size(file, f"image {iid}") if file else None
        events = ()
        if iid in image_records:
            path, rec = image_records[iid]
            events = tuple(_parse_all(path, [(f"record {iid}", rec)],
                                      lambda r: _m2e2_image_event(r, size), False))
        universe[iid] = Image(iid, size, events, str(file) if file else None)

    path = d / "crossmedia_coref.txt"
    links = []
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        problem = (f"expected 3 tab-separated fields, got {len(fields)}" if len(fields) != 3
                   else f"unknown sentence {fields[0]!r}" if fields[0] not in sentences
                   else f"unknown image {fields[1]!r}" if strip_ext(fields[1]) not in universe
                   else f"unknown event type {fields[2]!r}" if fields[2] not in TEXT_ROLES
                   else None)
        if problem:
            raise DataError(f"{path}: line {k}: {problem}")
        links.append(Link(fields[0], strip_ext(fields[1]), fields[2]))
    return M2E2(sentences, universe, links)


# -------------------------------------------------------------- training sources (skip bad records)
@gc_paused
def read_jmee(path) -> list[Sentence]:
    """ACE 2005 in JMEE-style JSON (a list of sentence objects)
    -> sentences with their M2E2-type events.

    Events of other ACE subtypes and arguments whose role is not a text role of the (mapped) type
    are dropped (counted in the file's warning); sentences without events are kept (they teach the
    model to say nothing). A trigger or argument span outside the sentence skips the sentence
    (counted); a missing field raises. Entity mentions are not kept. Ids: "sentence_id" if present,
    else "<file stem>-<index>".
    """
    path = Path(path)
    dropped = Counter()

    def parse(item) -> Sentence:
        i, rec = item
        words = _words(rec["words"])
        events = []
        for e in rec["golden-event-mentions"]:
            t = ACE_TO_M2E2.get(e["event_type"])
            if t is None:
                dropped["events of other ACE types"] += 1
                continue
            args = [Argument(a["role"], _span(a["start"], a["end"], len(words)))
                    for a in e["arguments"] if a["role"] in TEXT_ROLES[t]]
            dropped["arguments with roles not of their type"] += len(e["arguments"]) - len(args)
            events.append(TextEvent(
                t, _span(e["trigger"]["start"], e["trigger"]["end"], len(words)),
                _sort_args(args, TEXT_ROLES[t])))
        return Sentence(str(rec.get("sentence_id", f"{path.stem}-{i}")), words,
                        _sort_events(events))

    items = [(f"record {i}", (i, rec)) for i, rec in enumerate(_load_json(path, list))]
    return _parse_all(path, items, parse, skip_bad=True, dropped=dropped)


def _read_sr_mapping(path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """ace_sr_mapping.txt -> ({verb: M2E2 type}, {(verb, imSitu role): M2E2 role}).

    A line whose role is not an image role of its type is ignored, with one warning (the real file
    maps e.g. 'place' to Place for Conflict:Attack, but M2E2 images have no Place of an attack). A
    malformed line, an unknown type or a verb given two types raises DataError.
    """
    verb_type, role_map, ignored = {}, {}, []
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 4:
            raise DataError(f"{path}: line {k}: expected 4 tab-separated fields, got {len(fields)}")
        verb, sr_role, mapped_type, role = fields
        t = sr_event_type(mapped_type)
        if t is None:
            raise DataError(f"{path}: line {k}: unknown event type {mapped_type!r}")
        if verb_type.setdefault(verb, t) != t:
            raise DataError(f"{path}: line {k}: verb {verb!r} mapped to {verb_type[verb]} and {t}")
        if role in IMAGE_ROLES[t]:
            role_map[verb, sr_role] = role
        else:
            ignored.append(f"{verb} {sr_role} -> {t} {role}")
    if ignored:
        warnings.warn(f"{path}: ignored {len(ignored)} lines whose role is not an image role of "
                      f"the type (e.g. {ignored[0]})", stacklevel=3)
    return verb_type, role_map


@gc_paused
def read_swig(json_path, image_dir, mapping_path) -> list[Image]:
    """SWiG JSON {file name: {verb, frames, bb, width, height}} -> images, mapped through
    ace_sr_mapping.txt.

    A verb in the mapping gives one ImageEvent whose arguments are the boxes of its mapped roles
    (unmapped roles and [-1, -1, -1, -1] = no box are dropped); a verb not in the mapping gives an
    Image with events=(), a negative example. Every image file must exist and decode (else
    DataError). A record whose width/height differ from its file, or with a box that is inverted or
    outside the image, is skipped (counted). The noun frames are not kept. Image ids are the file
    names without extension.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    verb_type, role_map = _read_sr_mapping(mapping_path)

    def parse(item) -> Image:
        name, rec = item
        file = image_dir / name
        size = _image_size(file, f"record {name}")
        if (rec["width"], rec["height"]) != size:
            raise ValueError(f"width x height {rec['width']}x{rec['height']} differ from the "
                             f"file's {size[0]}x{size[1]}")
        t = verb_type.get(rec["verb"])
        if t is None:
            return Image(Path(name).stem, size, (), str(file))
        args = [Argument(role_map[rec["verb"], r], _box(xy, size)) for r, xy in rec["bb"].items()
                if (rec["verb"], r) in role_map and list(xy) != [-1, -1, -1, -1]]
        return Image(Path(name).stem, size, (ImageEvent(t, _sort_args(args, IMAGE_ROLES[t])),),
                     str(file))

    items = [(f"record {name}", (name, rec)) for name, rec in _load_json(json_path, dict).items()]
    return _parse_all(json_path, items, parse, skip_bad=True)


@gc_paused
def read_mnre(path, image_dir) -> list[RelationExample]:
    """MNRE: one Python dict literal per line (read with ast.literal_eval, never eval)
    -> relation examples.

    {'token': [...], 'h': {'name', 'pos': [s, e]}, 't': {...}, 'img_id': 'x.jpg',
    'relation': label}; an entity may carry 'bbox': [x1, y1, x2, y2] instead of 'pos' (a figure in
    the image; a toy-world extension). A line that is not a dict literal, a missing field, or an
    image file that is missing or does not decode raises DataError with file:line; a span outside
    the sentence, a bad box or a label not in MNRE_LABELS skips the line (counted).

    Lines of one sentence and one image make one example holding all their relations, in file
    order: MNRE writes an entity pair per line, and the same sentence and picture with different
    single-relation targets would ask the model for two answers to one question. Ids are
    "<file stem>-<index of the example's first line>"; each example carries its image (events=()).
    """
    path, image_dir = Path(path), Path(image_dir)
    sizes: dict[str, tuple[int, int]] = {}

    def parse(item) -> RelationExample:
        i, rec = item
        words, name = _words(rec["token"]), rec["img_id"]
        if name not in sizes:
            sizes[name] = _image_size(image_dir / name, f"line {i + 1}")
        if rec["relation"] not in MNRE_LABELS:
            raise ValueError(f"unknown relation {rec['relation']!r}")
        ends = [_box(ent["bbox"], sizes[name]) if "bbox" in ent else _span(*ent["pos"], len(words))
                for ent in (rec["h"], rec["t"])]
        image = Image(Path(name).stem, sizes[name], (), str(image_dir / name))
        return RelationExample(f"{path.stem}-{i}", words, (Relation(rec["relation"], *ends),),
                               image)

    items = []
    for i, line in enumerate(_read_lines(path)):
        if not line.strip():
            continue
        try:
            rec = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise DataError(f"{path}: line {i + 1}: not a Python literal "
                            f"({type(e).__name__}: {e})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {i + 1}: expected a dict literal, "
                            f"got {type(rec).__name__}")
        items.append((f"line {i + 1}", (i, rec)))
    grouped: dict[tuple, RelationExample] = {}
    for ex in _parse_all(path, items, parse, skip_bad=True):
        key = (ex.words, ex.image.id)
        first = grouped.setdefault(key, ex)
        if first is not ex and ex.relations[0] not in first.relations:
            grouped[key] = replace(first, relations=first.relations + ex.relations)
    return list(grouped.values())


SPLITS = ("train", "dev", "test")


@dataclass
class Sources:
    """Everything under a --data DIR, per split; a source or split whose file is absent is simply
    missing."""
    ace: dict[str, list[Sentence]]
    swig: dict[str, list[Image]]
    mnre: dict[str, list[RelationExample]]
    m2e2: dict[str, M2E2]


def read_sources(root) -> Sources:
    """Read every source of the --data DIR layout (docs/real_data.md);
    DataError if there is none at all."""
    root = Path(root)

    def files(source: str, ext: str) -> dict[str, Path]:
        return {s: root / source / f"{s}.{ext}" for s in SPLITS
                if (root / source / f"{s}.{ext}").exists()}

    sources = Sources(
        ace={s: read_jmee(p) for s, p in files("ace", "json").items()},
        swig={s: read_swig(p, root / "swig" / "images", root / "swig" / "ace_sr_mapping.txt")
              for s, p in files("swig", "json").items()},
        mnre={s: read_mnre(p, root / "mnre" / "images") for s, p in files("mnre", "txt").items()},
        m2e2={s: read_m2e2(root / "m2e2" / s, images=True)
              for s in SPLITS if (root / "m2e2" / s).is_dir()},
    )
    if not (sources.ace or sources.swig or sources.mnre or sources.m2e2):
        raise DataError(f"{root}: no data found "
                        f"(expected ace/, swig/, mnre/ or m2e2/ with split files)")
    return sources
