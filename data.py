"""Data: readers for the real source formats, and records -> tensors.

Readers (first section) turn each source into schema.py's records, checking what they read:

    read_jmee    ACE 2005, JMEE-style JSON              -> list[Sentence]        (8 M2E2 types kept)
    read_swig    SWiG JSON + images + ace_sr_mapping   -> list[Image]           (unmapped verbs: no event)
    read_mnre    MNRE dict-literal lines + images      -> list[RelationExample]
    read_m2e2    the five official M2E2 files (+images) -> M2E2(sentences, images, links)
    read_sources a --data DIR (layout in the README)    -> Sources, per split

Tensors (second section): the sentencepiece Tokenizer (schema tokens as single ids), letterboxed images
(the frame schema.py's location bins are defined on), Example -> encode_example -> collate, and the
TaskSampler that mixes tasks. torch is imported inside the few functions that make tensors, so that the
scorer (evaluate.py reads M2E2 through this file) starts without paying a second for it.

What this file does not do: decide which examples a task has (rmpl.py), or what a model does with them.
"""
from __future__ import annotations

import ast
import functools
import gc
import io
import itertools
import json
import random
import warnings
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np
import sentencepiece as spm
from PIL import Image as PILImage

if TYPE_CHECKING:  # annotations only: torch itself is imported where tensors are made (docstring)
    import torch

from schema import (ACE_TO_M2E2, IMAGE_ROLES, LOC_TOKENS, MNRE_LABELS, NUM_BINS, ROLE_TOKENS,
                    SPECIAL_TOKENS, TASKS, TEXT_ROLES, Argument, Box,
                    Image, ImageEvent, Link, Relation, RelationExample, Sentence, Span, TextEvent, sr_event_type)

# ============================================================================= readers
# Every reader returns schema records in a canonical order, so that the decoder targets built from them are
# canonical too: events by trigger (start, end, type); arguments by the role's index in the type's role list
# (TEXT_ROLES or IMAGE_ROLES), then by position (span start, end or box x1, y1, x2, y2); exact duplicates removed.
#
# Bad input raises DataError naming the file, the record and the problem. The gold reader (M2E2) raises on
# every problem. The training readers (JMEE, SWiG, MNRE) raise when the format itself is broken (not JSON,
# wrong top-level type, a missing field, an image file that is missing or does not decode) but skip a record
# with a bad offset, box, label or word (none, or one the tokenizer cannot hold), and say so in one warning per file ("skipped N records: ..."), together
# with what the schema mapping dropped on purpose (other ACE types, roles that are not roles of the type).


class DataError(ValueError):
    """Bad input data; the message reads '{file}: record {id}: {problem}' (or 'line {k}')."""


def _span(start, end, n: int) -> Span:
    """Word offsets [start, end) in a sentence of n words; ValueError unless 0 <= start < end <= n."""
    if not (type(start) is int and type(end) is int and 0 <= start < end <= n):
        raise ValueError(f"span {start!r}..{end!r} outside a sentence of {n} words")
    return Span(start, end)


def _box(coords, size: tuple[int, int] | None = None) -> Box:
    """[x1, y1, x2, y2] -> Box; ValueError unless 0 <= x1 < x2 and 0 <= y1 < y2, and inside the image if its size is known."""
    if len(coords) != 4 or not all(type(v) in (int, float) for v in coords):
        raise ValueError(f"box {coords!r} is not four numbers")
    x1, y1, x2, y2 = coords
    if not (0 <= x1 < x2 and 0 <= y1 < y2):
        raise ValueError(f"box {list(coords)} is not 0 <= x1 < x2, 0 <= y1 < y2")
    if size is not None and not (x2 <= size[0] and y2 <= size[1]):
        raise ValueError(f"box {list(coords)} outside the {size[0]}x{size[1]} image")
    return Box(x1, y1, x2, y2)


def _position(target: Span | Box) -> tuple:
    return tuple(vars(target).values())  # (start, end) or (x1, y1, x2, y2); dataclasses.astuple is 5x slower


def _sort_args(args, roles: tuple[str, ...]) -> tuple[Argument, ...]:
    return tuple(sorted(set(args), key=lambda a: (roles.index(a.role), _position(a.target))))


def _sort_events(events) -> tuple:
    key = lambda e: (e.trigger.start, e.trigger.end, e.event_type, [(a.role, _position(a.target)) for a in e.arguments])
    return tuple(sorted(set(events), key=key))


def _image_size(file: Path, where: str) -> tuple[int, int]:
    """(width, height) of an image file after pillow's verify() (headers and structure; pixels are decoded later)."""
    try:
        with PILImage.open(file) as im:
            size = im.size
            im.verify()
    except FileNotFoundError:
        raise DataError(f"{file}: {where}: image file not found") from None
    except Exception as e:  # pillow signals a bad file with many exception types
        raise DataError(f"{file}: {where}: not a readable image ({type(e).__name__}: {e})") from None
    return size


def _unique_keys(pairs: list) -> dict:
    """json object_pairs_hook: a key given twice is an error (json.loads would silently keep the last record)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):  # the rare case: find the key (counting every object cost 30% of read_m2e2)
        twice = next(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise ValueError(f"duplicate key {twice!r}")
    return obj


def _load_json(path: Path, kind: type):
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, a duplicate key
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected a JSON {kind.__name__} at the top level, got {type(data).__name__}")
    return data


def _read_lines(path: Path) -> list[str]:
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path}: line {line}: not valid UTF-8 (byte {raw[e.start]:#04x})") from None


def _words(words) -> tuple[str, ...]:
    """A sentence's words: TypeError unless a list of strings (a broken format); ValueError if there are none or
    one the tokenizer cannot hold (empty, or with ' ' or '\u2581'), which a training reader skips."""
    try:
        text = "".join(words) if isinstance(words, list) else None  # join: TypeError on a word that is no str
    except TypeError:
        text = None
    if text is None:
        raise TypeError(f"words must be a list of strings, got {words!r:.80}")
    if not words:
        raise ValueError("a sentence with no words")
    if not (all(words) and _encodable(text)):  # one check per sentence; a word only when it fails
        bad = next(w for w in words if not _encodable(w))
        raise ValueError(f"word {bad!r} is empty or holds a space")
    return tuple(words)


def _parse_all(path: Path, items, parse, skip_bad: bool, dropped: Counter | None = None) -> list:
    """parse(record) for each (where, record) in items. A broken format (KeyError, TypeError, AttributeError) raises
    DataError naming file and record; so does a bad value (ValueError) unless skip_bad, where the record is skipped
    and counted. DataError from inside (image files) passes through. One warning sums up skipped and dropped."""
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
    notes = [f"skipped {len(skipped)} records: " + "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else "")] if skipped else []
    notes += [f"dropped {n} {what}" for what, n in (dropped or {}).items() if n]
    if notes:
        warnings.warn(f"{path}: " + "; ".join(notes), stacklevel=3)
    return out


def gc_paused(reader):
    """Run ``reader`` with Python's cyclic garbage collector paused. Building records from a large parsed JSON
    file allocates containers by the hundred thousand, and each allocation burst makes the collector re-scan
    the whole (growing) heap: read_m2e2 on the real files took 0.39 s with it and 0.24 s without. Records hold
    no reference cycles, so nothing is left for it to collect; it is re-enabled (if it was on) on return."""
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


def _strip_ext(name: str) -> str:
    return name[:-4] if name[-4:].lower() in (".jpg", ".png") else name


# ----------------------------------------------------------------------------- M2E2 (the gold: errors only)
@dataclass
class M2E2:
    """The M2E2 evaluation set: the sentence and image universes (event-free ones included) and the 309 links."""
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
    images = tuple(_strip_ext(name) for name in rec.get("image", []))
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


@gc_paused
def read_m2e2(directory, images: bool = False) -> M2E2:
    """Read the five official M2E2 files in `directory` (see docs/m2e2.md); raise DataError on any problem.

    Sentences: the union of text_only_event.json and text_multimedia_event.json; an id in both (38 in the real
    files) must have the same words and images, and its events are the union. Images: every image named in a
    sentence's `image` list plus every image of image_only_event.json / image_multimedia_event.json, ids without
    extension; an event image has one ImageEvent with every box (group and instance) as an argument, others
    have events=(). Boxes must satisfy 0 <= x1 < x2, 0 <= y1 < y2 (all 1,429 real boxes do). With images=True,
    `directory/images/<id>.jpg` or `.png` is opened where it exists: it must decode, gives Image.size and
    Image.path, and the image's boxes must lie inside it. Links must name a known sentence, image and type.
    Entity mentions are not kept (Sentence has no field for them; every argument span is one anyway).
    The real files give 6,167 sentences, 1,297 events, 1,966 arguments, 940 images (391 with an event,
    1,429 boxes) and 309 links.
    """
    d = Path(directory)
    sentences: dict[str, Sentence] = {}
    for name in ("text_only_event.json", "text_multimedia_event.json"):
        path = d / name
        records = _load_json(path, list)
        items = [(f"record {r.get('sentence_id', i) if isinstance(r, dict) else i}", r) for i, r in enumerate(records)]
        seen = set()
        for (where, _), s in zip(items, _parse_all(path, items, _m2e2_sentence, skip_bad=False)):
            if s.id in seen:
                raise DataError(f"{path}: {where}: sentence id given twice in this file")
            seen.add(s.id)
            old = sentences.get(s.id)
            if old is not None:  # the same sentence annotated in both files: its gold is the union
                if (old.words, old.images) != (s.words, s.images):
                    raise DataError(f"{path}: {where}: occurs in both text files with different words or images")
                s.events = _sort_events(old.events + s.events)
            sentences[s.id] = s

    image_records: dict[str, tuple[Path, dict]] = {}
    for name in ("image_only_event.json", "image_multimedia_event.json"):
        path = d / name
        for key, rec in _load_json(path, dict).items():
            if _strip_ext(key) in image_records:
                raise DataError(f"{path}: record {key}: image annotated twice")
            image_records[_strip_ext(key)] = (path, rec)

    universe: dict[str, Image] = {}
    for iid in dict.fromkeys([i for s in sentences.values() for i in s.images] + list(image_records)):
        files = [d / "images" / f"{iid}{ext}" for ext in (".jpg", ".png")] if images else []
        file = next((f for f in files if f.exists()), None)
        size = _image_size(file, f"image {iid}") if file else None
        events = ()
        if iid in image_records:
            path, rec = image_records[iid]
            events = tuple(_parse_all(path, [(f"record {iid}", rec)], lambda r: _m2e2_image_event(r, size), False))
        universe[iid] = Image(iid, size, events, str(file) if file else None)

    path = d / "crossmedia_coref.txt"
    links = []
    for k, line in enumerate(_read_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        problem = (f"expected 3 tab-separated fields, got {len(fields)}" if len(fields) != 3
                   else f"unknown sentence {fields[0]!r}" if fields[0] not in sentences
                   else f"unknown image {fields[1]!r}" if _strip_ext(fields[1]) not in universe
                   else f"unknown event type {fields[2]!r}" if fields[2] not in TEXT_ROLES else None)
        if problem:
            raise DataError(f"{path}: line {k}: {problem}")
        links.append(Link(fields[0], _strip_ext(fields[1]), fields[2]))
    return M2E2(sentences, universe, links)


# ----------------------------------------------------------------------------- training sources (skip bad records)
@gc_paused
def read_jmee(path) -> list[Sentence]:
    """ACE 2005 in JMEE-style JSON (a list of sentence objects) -> sentences with their M2E2-type events.

    Events of other ACE subtypes and arguments whose role is not a text role of the (mapped) type are dropped
    (counted in the file's warning); sentences without events are kept (they teach the model to say nothing).
    A trigger or argument span outside the sentence skips the sentence (counted); a missing field raises.
    Entity mentions are not kept. Ids: "sentence_id" if present, else "<file stem>-<index>".
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
            events.append(TextEvent(t, _span(e["trigger"]["start"], e["trigger"]["end"], len(words)),
                                    _sort_args(args, TEXT_ROLES[t])))
        return Sentence(str(rec.get("sentence_id", f"{path.stem}-{i}")), words, _sort_events(events))

    items = [(f"record {i}", (i, rec)) for i, rec in enumerate(_load_json(path, list))]
    return _parse_all(path, items, parse, skip_bad=True, dropped=dropped)


def _read_sr_mapping(path) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """ace_sr_mapping.txt -> ({verb: M2E2 type}, {(verb, imSitu role): M2E2 role}).

    A line whose role is not an image role of its type is ignored, with one warning (the real file maps e.g.
    'place' to Place for Conflict:Attack, but M2E2 images have no Place of an attack). A malformed line, an
    unknown type or a verb given two types raises DataError.
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
        warnings.warn(f"{path}: ignored {len(ignored)} lines whose role is not an image role of the type "
                      f"(e.g. {ignored[0]})", stacklevel=3)
    return verb_type, role_map


@gc_paused
def read_swig(json_path, image_dir, mapping_path) -> list[Image]:
    """SWiG JSON {file name: {verb, frames, bb, width, height}} -> images, mapped through ace_sr_mapping.txt.

    A verb in the mapping gives one ImageEvent whose arguments are the boxes of its mapped roles (unmapped roles
    and [-1, -1, -1, -1] = no box are dropped); a verb not in the mapping gives an Image with events=(), a
    negative example. Every image file must exist and decode (else DataError). A record whose width/height
    differ from its file, or with a box that is inverted or outside the image, is skipped (counted).
    The noun frames are not kept. Image ids are the file names without extension.
    """
    json_path, image_dir = Path(json_path), Path(image_dir)
    verb_type, role_map = _read_sr_mapping(mapping_path)

    def parse(item) -> Image:
        name, rec = item
        file = image_dir / name
        size = _image_size(file, f"record {name}")
        if (rec["width"], rec["height"]) != size:
            raise ValueError(f"width x height {rec['width']}x{rec['height']} differ from the file's {size[0]}x{size[1]}")
        t = verb_type.get(rec["verb"])
        if t is None:
            return Image(Path(name).stem, size, (), str(file))
        args = [Argument(role_map[rec["verb"], r], _box(xy, size)) for r, xy in rec["bb"].items()
                if (rec["verb"], r) in role_map and list(xy) != [-1, -1, -1, -1]]
        return Image(Path(name).stem, size, (ImageEvent(t, _sort_args(args, IMAGE_ROLES[t])),), str(file))

    items = [(f"record {name}", (name, rec)) for name, rec in _load_json(json_path, dict).items()]
    return _parse_all(json_path, items, parse, skip_bad=True)


@gc_paused
def read_mnre(path, image_dir) -> list[RelationExample]:
    """MNRE: one Python dict literal per line (read with ast.literal_eval, never eval) -> relation examples.

    {'token': [...], 'h': {'name', 'pos': [s, e]}, 't': {...}, 'img_id': 'x.jpg', 'relation': label}; an entity
    may carry 'bbox': [x1, y1, x2, y2] instead of 'pos' (a figure in the image; a toy-world extension). A line
    that is not a dict literal, a missing field, or an image file that is missing or does not decode raises
    DataError with file:line; a span outside the sentence, a bad box or a label not in MNRE_LABELS skips the
    line (counted). Ids are "<file stem>-<line index>"; each example carries its image (events=()).
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
        return RelationExample(f"{path.stem}-{i}", words, (Relation(rec["relation"], *ends),), image)

    items = []
    for i, line in enumerate(_read_lines(path)):
        if not line.strip():
            continue
        try:
            rec = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            raise DataError(f"{path}: line {i + 1}: not a Python literal ({type(e).__name__}: {e})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}: line {i + 1}: expected a dict literal, got {type(rec).__name__}")
        items.append((f"line {i + 1}", (i, rec)))
    return _parse_all(path, items, parse, skip_bad=True)


SPLITS = ("train", "dev", "test")


@dataclass
class Sources:
    """Everything under a --data DIR, per split; a source or split whose file is absent is simply missing."""
    ace: dict[str, list[Sentence]]
    swig: dict[str, list[Image]]
    mnre: dict[str, list[RelationExample]]
    m2e2: dict[str, M2E2]


def read_sources(root) -> Sources:
    """Read every source of the --data DIR layout (docs: notes/layout.md); DataError if there is none at all."""
    root = Path(root)

    def files(source: str, ext: str) -> dict[str, Path]:
        return {s: root / source / f"{s}.{ext}" for s in SPLITS if (root / source / f"{s}.{ext}").exists()}

    sources = Sources(
        ace={s: read_jmee(p) for s, p in files("ace", "json").items()},
        swig={s: read_swig(p, root / "swig" / "images", root / "swig" / "ace_sr_mapping.txt")
              for s, p in files("swig", "json").items()},
        mnre={s: read_mnre(p, root / "mnre" / "images") for s, p in files("mnre", "txt").items()},
        m2e2={s: read_m2e2(root / "m2e2" / s, images=True) for s in SPLITS if (root / "m2e2" / s).is_dir()},
    )
    if not (sources.ace or sources.swig or sources.mnre or sources.m2e2):
        raise DataError(f"{root}: no data found (expected ace/, swig/, mnre/ or m2e2/ with split files)")
    return sources


# ============================================================================= tensors
# (section owned by the tensors work: tokenizer, images, examples, collate, sampler)
#
# Records become tensors in four steps:
#   Tokenizer    schema tokens + words <-> ids (sentencepiece BPE; every schema token is one fixed id)
#   load_image   an image file -> (3, S, S) letterboxed float tensor, in the frame schema's boxes use
#   Example      one item of any task; encode_example + collate -> the batch dict the model reads
#   TaskSampler  an endless, seeded, resumable sampler that mixes tasks by given weights
# Training text and prompts are built elsewhere (rmpl.py); this section only turns them into numbers.

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
FIRST_SPECIAL_ID = 4  # schema.SPECIAL_TOKENS[i] has id FIRST_SPECIAL_ID + i
_SPECIAL_ID = {tok: FIRST_SPECIAL_ID + i for i, tok in enumerate(SPECIAL_TOKENS)}
_SPECIAL_OF = {i: tok for tok, i in _SPECIAL_ID.items()}


class Tokenizer:
    """Sentencepiece BPE over words, with every schema token as one id.

    Ids: 0 <pad>, 1 <unk>, 2 <s> (bos), 3 </s> (eos), then schema.SPECIAL_TOKENS in their order (ids 4 ..
    4 + len - 1, sentencepiece control symbols: text never encodes to them, encode splices them in by id),
    then 256 byte pieces <0x00>..<0xFF>, then the learned pieces.

    BPE rather than unigram: its merges are greedy and deterministic, on a small corpus its pieces are
    frequent whole words (readable in logs), and it fills vocab_size exactly when the corpus allows
    (unigram prunes below it). Unigram's advantage, subword sampling, is not used here.

    Words are joined by single spaces and each run of words between schema tokens is encoded as one
    string; decode splits sentencepiece's output on spaces, so word boundaries come back. Normalisation
    is "identity" (NFKC would rewrite words and break their alignment to word offsets) and
    byte_fallback=True: a character unseen in training (or rarer than character_coverage) is written as
    its UTF-8 bytes, so any word round-trips exactly and encode never emits <unk>. A word cannot hold a
    space or sentencepiece's boundary mark '\u2581' (encode refuses them); a word spelled like a schema
    token ("<head>") is read as that token.
    """

    def __init__(self, model_proto: bytes, source: str = "<memory>"):
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except RuntimeError as e:
            raise DataError(f"{source}: not a sentencepiece model ({e})") from None
        self.proto = model_proto  # the .model file's bytes: what save() writes
        n = self.sp.get_piece_size()
        # a model trained with another schema version would silently map <loc_3> to another token
        bad = [t for t, i in _SPECIAL_ID.items() if i >= n or self.sp.id_to_piece(i) != t]
        if bad or (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (0, 1, 2, 3):
            raise DataError(f"{source}: tokenizer does not match this schema ({len(bad)} special tokens "
                            f"missing or moved, first {bad[:1]}); retrain it")

    @classmethod
    def train(cls, texts: Iterable[str | Sequence[str]], vocab_size: int = 2000, seed: int = 0) -> Tokenizer:
        """Train on training text only: each item a sentence string or a token list (schema tokens dropped).

        Deterministic: the same texts, vocab_size and seed give a byte-identical model. vocab_size includes
        the 4 + len(SPECIAL_TOKENS) + 256 fixed pieces and must also hold every training character (else
        ValueError); on a tiny corpus the vocabulary comes out smaller (hard_vocab_limit=False).
        """
        lines = [t if isinstance(t, str) else " ".join(w for w in t if w not in _SPECIAL_ID) for t in texts]
        lines = [line for line in lines if line.strip()]
        if not lines:
            raise ValueError("Tokenizer.train: no training text")
        spm.set_random_generator_seed(seed)  # BPE itself is deterministic; this pins sentence sampling
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
                hard_vocab_limit=False, normalization_rule_name="identity", byte_fallback=True,
                pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, control_symbols=list(SPECIAL_TOKENS),
                max_sentence_length=1 << 16,  # the default (4192 bytes) silently skips longer lines
                num_threads=1, minloglevel=2)  # num_threads is written into the model: fix it for identical bytes
        except RuntimeError as e:  # e.g. "Vocabulary size is smaller than required_chars. 300 vs 412"
            raise ValueError(f"Tokenizer.train(vocab_size={vocab_size}) failed: {e}") from None
        return cls(model.getvalue())

    def save(self, path) -> None:
        Path(path).write_bytes(self.proto)

    @classmethod
    def load(cls, path) -> Tokenizer:
        return cls(Path(path).read_bytes(), source=str(path))

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Schema tokens and words -> ids. No bos/eos: encode_example adds eos to targets."""
        ids: list[int] = []
        for special, run in itertools.groupby(tokens, key=_SPECIAL_ID.__contains__):
            if special:
                ids += [_SPECIAL_ID[t] for t in run]
                continue
            words = list(run)
            for w in words:
                if not _encodable(w):
                    raise ValueError(f"cannot encode word {w!r}: words are non-empty strings of valid unicode "
                                     f"without ' ' or '\u2581'")
            ids += self.sp.encode(" ".join(words))
        return ids

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[str]:
        """Ids -> schema tokens and whole words. Never raises: pad, bos, eos and ids outside the vocabulary are
        dropped, an <unk> reads as '\u2047', a broken byte sequence as '\ufffd'."""
        ids = ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]  # a tensor or a list
        ids = [i for i in ids if i not in (PAD_ID, BOS_ID, EOS_ID) and 0 <= i < self.vocab_size]
        out: list[str] = []
        for special, run in itertools.groupby(ids, key=_SPECIAL_OF.__contains__):
            if special:
                out += [_SPECIAL_OF[i] for i in run]
            else:  # split on ' ' only: other whitespace (tab, no-break space) is part of a word
                out += [w for w in self.sp.decode(list(run)).split(" ") if w]
        return out


def _encodable(word) -> bool:
    """A word survives encode -> decode unchanged: non-empty, no ' ' or '\u2581', no lone surrogate."""
    try:
        return isinstance(word, str) and word != "" and " " not in word and "\u2581" not in word and bool(word.encode())
    except UnicodeEncodeError:
        return False


# ----------------------------------------------------------------------------- images
# Normalisation with ImageNet statistics, the usual choice (it keeps a pretrained vision encoder usable).
# The letterbox padding and "no image" are zeros after normalising, i.e. the mean colour.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
MAX_DECODE_PIXELS = 50_000_000  # refuse to decode more (about 150 MB as RGB) after JPEG draft scaling


def _to_rgb(img: PILImage.Image) -> PILImage.Image:
    """Any pillow mode -> RGB. 16/32-bit grey is scaled from 0..65535 (float 'F' from 0..1) to 8 bits;
    transparency is composited onto white (transparent web images are mostly drawn for white pages)."""
    if img.mode.startswith("I") or img.mode == "F":
        scale = 255 / 65535 if img.mode.startswith("I") else 255
        grey = np.clip(np.asarray(img, dtype=np.float64) * scale, 0, 255).round().astype(np.uint8)
        img = PILImage.fromarray(grey, "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        img = PILImage.alpha_composite(PILImage.new("RGBA", img.size, (255, 255, 255, 255)), img.convert("RGBA"))
    return img.convert("RGB")


def load_image(path, size: int, max_pixels: int = MAX_DECODE_PIXELS) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file -> ((3, size, size) normalised float tensor, (W, H) of the file).

    Letterbox: scale s = size / max(W, H), resize to (round(W s), round(H s)) and paste at the top-left
    of a size x size canvas of zeros. Canvas pixel j then covers original pixels [j L / size, (j+1) L / size)
    with L = max(W, H) (up to half a canvas pixel of rounding at the far edge): exactly the frame
    schema.box_to_tokens quantises, so with size = NUM_BINS canvas pixel k is location bin k.
    Huge files: JPEGs are decoded at 1/2, 1/4 or 1/8 scale when that still covers `size` (Image.draft);
    anything still above max_pixels is refused, and pillow itself refuses files above
    2 * Image.MAX_IMAGE_PIXELS before decoding (DecompressionBombError). EXIF orientation is not applied:
    boxes are in the stored pixel frame. Raises DataError naming the file.
    """
    import torch
    try:
        with PILImage.open(path) as img:
            W, H = img.size
            img.draft("RGB", (size, size))  # no-op unless JPEG; keeps both sides >= size
            if img.width * img.height > max_pixels:
                raise DataError(f"{path}: {W}x{H} image too large to decode (more than {max_pixels} pixels)")
            img = _to_rgb(img)
    except DataError:
        raise
    except Exception as e:  # pillow signals a bad file with many exception types (OSError, SyntaxError, ...)
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from None
    s = size / max(W, H)
    w, h = max(1, round(W * s)), max(1, round(H * s))
    pixels = np.asarray(img.resize((w, h), PILImage.BILINEAR), dtype=np.float32) / 255  # (h, w, 3)
    x = torch.from_numpy(pixels).permute(2, 0, 1)  # (3, h, w)
    x = (x - torch.tensor(IMAGE_MEAN).view(3, 1, 1)) / torch.tensor(IMAGE_STD).view(3, 1, 1)
    canvas = torch.zeros(3, size, size)
    canvas[:, :h, :w] = x
    return canvas, (W, H)


class ImageCache:
    """load_image behind an in-memory LRU cache of at most max_bytes (default 1 GiB: about 5,000 images at
    size 128, 1,700 at 224), so training is not bound by decoding. Returned tensors are shared: do not
    modify them in place (collate copies them with torch.stack)."""

    def __init__(self, max_bytes: int = 1 << 30):
        self.max_bytes, self.nbytes, self.items = max_bytes, 0, OrderedDict()

    def load(self, path, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
        key = (str(path), size)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        item = self.items[key] = load_image(path, size)
        self.nbytes += item[0].nbytes
        while self.nbytes > self.max_bytes and len(self.items) > 1:  # evict least recently used
            self.nbytes -= self.items.popitem(last=False)[1][0].nbytes
        return item


# ----------------------------------------------------------------------------- examples and batches
@dataclass
class Example:
    """One item of any task: the encoder reads `prompt` (+ the image), the decoder writes `target`.

    prompt and target are lists of schema tokens and words (target as schema.linearise writes it);
    image is a file path or None, size its (W, H) when known (box tokens are in that frame; a file of
    another size is refused); meta carries ids for inference (sentence id, image id, event ...).
    """
    task: str
    prompt: list[str]
    target: list[str]
    image: str | None = None
    size: tuple[int, int] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"Example task {self.task!r} is not one of {TASKS}")


def encode_example(ex: Example, tokenizer: Tokenizer, image_size: int, max_input_len: int = 256,
                   max_target_len: int = 256, cache: ImageCache | None = None, counts: Counter | None = None) -> dict:
    """Example -> dict of tensors for collate, plus how many ids were cut.

    target_ids = encode(target) + eos (no bos: the model shifts and prepends its own start token).
    Truncation keeps the first max_input_len / max_target_len ids (a cut target loses its eos, so the model
    is never taught to stop early); the cut counts are returned as input_cut / target_cut and, when
    `counts` is given, added to counts["input_truncated"] / counts["target_truncated"] (examples cut).
    """
    import torch
    try:
        input_ids = tokenizer.encode(ex.prompt)
        target_ids = tokenizer.encode(ex.target) + [tokenizer.eos_id]
    except ValueError as e:
        raise ValueError(f"{ex.task} example {ex.meta}: {e}") from None
    input_cut, target_cut = max(0, len(input_ids) - max_input_len), max(0, len(target_ids) - max_target_len)
    if counts is not None:
        counts["examples"] += 1
        counts["input_truncated"] += input_cut > 0
        counts["target_truncated"] += target_cut > 0
    image = torch.zeros(3, image_size, image_size)
    if ex.image is not None:
        image, wh = (cache.load if cache is not None else load_image)(ex.image, image_size)
        if ex.size is not None and tuple(ex.size) != wh:
            raise DataError(f"{ex.image}: file is {wh[0]}x{wh[1]} but {ex.task} example {ex.meta} says "
                            f"{ex.size[0]}x{ex.size[1]}: its boxes would be in another frame")
    return {"input_ids": torch.tensor(input_ids[:max_input_len], dtype=torch.long),
            "target_ids": torch.tensor(target_ids[:max_target_len], dtype=torch.long),
            "image": image, "has_image": ex.image is not None, "task_id": TASKS.index(ex.task),
            "input_cut": input_cut, "target_cut": target_cut,
            "bins_wide": _bins_wide(ex.size) if ex.image is not None and ex.size else 0}


def _bins_wide(size: tuple[int, int]) -> int:
    """How many location bins (and canvas pixels at image_size = NUM_BINS) the letterboxed image's
    width covers: hflip mirrors bins and pixels inside this width, not across the padding."""
    return max(1, round(NUM_BINS * size[0] / max(size)))


def collate(encoded: list[dict], pad_id: int = PAD_ID) -> dict[str, torch.Tensor]:
    """encode_example outputs -> the batch: exactly input_ids, images, has_image, target_ids, task_ids.

    Padding is pad_id, which no real token uses, so a mask is simply `ids != pad_id`.
    """
    import torch
    pad = lambda seqs: torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=pad_id)
    return {"input_ids": pad([e["input_ids"] for e in encoded]),                  # (B, T) long
            "images": torch.stack([e["image"] for e in encoded]),                 # (B, 3, S, S) float
            "has_image": torch.tensor([e["has_image"] for e in encoded]),         # (B,) bool
            "target_ids": pad([e["target_ids"] for e in encoded]),                # (B, L) long
            "task_ids": torch.tensor([e["task_id"] for e in encoded], dtype=torch.long)}  # (B,)


_LOC_ID0 = FIRST_SPECIAL_ID + SPECIAL_TOKENS.index(LOC_TOKENS[0])  # loc token ids are consecutive
_ROLE_IDS = {FIRST_SPECIAL_ID + SPECIAL_TOKENS.index(tok) for tok in ROLE_TOKENS.values()}


def _is_box(ids: list[int], i: int) -> bool:
    return i + 4 <= len(ids) and all(0 <= t - _LOC_ID0 < NUM_BINS for t in ids[i:i + 4])


def hflip(encoded: dict) -> dict:
    """An encoded example with an image, mirrored left to right: the letterboxed picture inside its
    own width (the padding stays at the right) and every box of the target, x1 x2 -> w-1-x2 w-1-x1 in
    bins, exact when image_size = NUM_BINS. Arguments of one role are then re-sorted by position, so
    the target keeps the readers' canonical order. Examples without an image come back unchanged."""
    w = encoded.get("bins_wide", 0)
    if not encoded["has_image"] or not w:
        return encoded
    image = encoded["image"].clone()  # cached images are shared (ImageCache)
    pw = round(w * image.shape[-1] / NUM_BINS)                    # canvas columns of the picture
    image[:, :, :pw] = image[:, :, :pw].flip(-1)                  # (3, S, S)
    ids, out, i = encoded["target_ids"].tolist(), [], 0
    while i < len(ids):
        if _is_box(ids, i):
            x1, y1, x2, y2 = (t - _LOC_ID0 for t in ids[i:i + 4])
            new_x1, new_x2 = max(0, w - 1 - x2), max(0, w - 1 - x1)
            out += [_LOC_ID0 + new_x1, ids[i + 1], _LOC_ID0 + new_x2, ids[i + 3]]
            i += 4
        else:
            out.append(ids[i])
            i += 1
    target = encoded["target_ids"].new_tensor(_sort_same_role(out))
    return {**encoded, "image": image, "target_ids": target}


def _sort_same_role(ids: list[int]) -> list[int]:
    """Runs of box arguments of one role ([role, 4 locs] repeated) sorted by (x1, y1, x2, y2)."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while ids[i] in _ROLE_IDS and j < len(ids) and ids[j] == ids[i] and _is_box(ids, j + 1):
            j += 5
        if j > i:
            out += [t for arg in sorted(ids[k:k + 5] for k in range(i, j, 5)) for t in arg]
            i = j
        else:
            out.append(ids[i])
            i += 1
    return out


def tempered_weights(sizes: dict[str, int], alpha: float) -> dict[str, float]:
    """Task probabilities p_t ∝ n_t ** alpha: alpha = 1 is proportional to size (every example equally
    often), alpha = 0 is uniform over tasks; in between, small tasks are seen more without dominating."""
    raw = {t: float(n) ** alpha if n > 0 else 0.0 for t, n in sizes.items()}
    total = sum(raw.values())
    if total <= 0:
        raise ValueError(f"tempered_weights: no task has examples ({sizes})")
    return {t: v / total for t, v in raw.items()}


class TaskSampler:
    """Endless batches that mix tasks; the items are Examples or anything else (encoded dicts).

    Rule: each of the batch_size * world_size slots of a global batch draws its task independently with
    probability weights[task] / sum(weights) (tasks with weight 0 or no examples are never drawn); a task
    hands out its examples in a fresh shuffled order every epoch (its own epochs: a small task cycles
    more often). Step s's draws come from random.Random(f"{seed}/step/{s}") and task t's epoch e order
    from random.Random(f"{seed}/{t}/{e}"), so the whole state is the step and one cursor per task
    (`state_dict()`), and `load_state_dict` resumes bit-exactly. DDP: every rank draws the same global
    batch and keeps slots [rank * batch_size, (rank + 1) * batch_size), so ranks get disjoint examples
    (within an epoch) and share one state.
    """

    def __init__(self, datasets: dict[str, list], weights: dict[str, float], batch_size: int,
                 seed: int = 0, rank: int = 0, world_size: int = 1, hflip: float = 0.0):
        unknown = (set(datasets) - set(TASKS)) | (set(weights) - set(datasets))
        if unknown or any(w < 0 for w in weights.values()) or not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(f"TaskSampler: bad arguments (unknown tasks {sorted(unknown)}, weights {weights}, "
                             f"rank {rank} of {world_size}, batch_size {batch_size})")
        self.tasks = [t for t in TASKS if weights.get(t, 0) > 0 and datasets.get(t)]
        if not self.tasks:
            raise ValueError(f"TaskSampler: no task has both a positive weight and examples ({weights})")
        self.datasets, self.weights = datasets, [weights[t] for t in self.tasks]
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        self.hflip = hflip  # probability of mirroring an item (an encoded dict with an image: hflip)
        self.step, self.cursor = 0, {t: 0 for t in self.tasks}
        self._order: dict[str, tuple[int, list[int]]] = {}  # task -> (epoch, shuffled indices)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "step": self.step, "cursor": dict(self.cursor),
                "sizes": {t: len(self.datasets[t]) for t in self.tasks}}

    def load_state_dict(self, state: dict) -> None:
        if state["seed"] != self.seed or state["sizes"] != self.state_dict()["sizes"]:
            raise ValueError(f"TaskSampler: cannot resume a sampler of seed {state['seed']}, sizes {state['sizes']} "
                             f"with seed {self.seed}, sizes {self.state_dict()['sizes']}")
        self.step, self.cursor = int(state["step"]), {t: int(state["cursor"][t]) for t in self.tasks}

    def _item(self, task: str, k: int):
        """The k-th item handed out by `task`: position k % n of its epoch k // n's order."""
        data = self.datasets[task]
        epoch, i = divmod(k, len(data))
        if self._order.get(task, (None,))[0] != epoch:
            order = list(range(len(data)))
            random.Random(f"{self.seed}/{task}/{epoch}").shuffle(order)
            self._order[task] = (epoch, order)
        return data[self._order[task][1][i]]

    def __iter__(self):
        return self

    def __next__(self) -> list:
        draws = random.Random(f"{self.seed}/step/{self.step}").choices(
            self.tasks, weights=self.weights, k=self.batch_size * self.world_size)
        flips = random.Random(f"{self.seed}/flip/{self.step}")  # from the step: resume stays exact
        batch = []
        for slot, task in enumerate(draws):
            flip = flips.random() < self.hflip
            if slot // self.batch_size == self.rank:
                item = self._item(task, self.cursor[task])
                batch.append(hflip(item) if flip else item)
            self.cursor[task] += 1
        self.step += 1
        return batch
