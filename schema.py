"""The unified schema: one target language for every task RMPL trains on.

Everything the model reads or writes passes through this file:

* the M2E2 event types with their text and image roles, as spelled in the data,
  and the tables that map the training sources onto them (ACE subtypes by name,
  imSitu/SWiG verbs and roles through ``ace_sr_mapping.txt``, MNRE labels);
* the record types: ``TextEvent``, ``ImageEvent``, ``Relation`` (and the
  containers ``Sentence``, ``Image``, ``RelationExample`` that readers return);
* ``linearise`` (records -> decoder target tokens) and its inverse ``parse``.

Target language.  A target is a flat list of string tokens: special tokens
(``<t:Life:Die>``, ``<r:Victim>``, ``<loc_12>`` ...) and plain words::

    text event    <t:Conflict:Attack> bombed <r:Attacker> rebels <r:Place> Aleppo
    image event   <t:Life:Die> <r:Victim> <loc_3> <loc_10> <loc_20> <loc_31>
    relation      <rel:/per/per/couple> <head> Anna <tail> <loc_0> <loc_5> <loc_9> <loc_30>

A type token opens an event; trigger words follow it (text only); each role
token opens an argument whose value is words (a span) or four location tokens
(a box).  Words are aligned back to word offsets by exact match: the k-th
occurrence of the word sequence in the sentence, where k is 1 unless an
occurrence token ``<occK>`` (K = 2..MAX_OCC) follows the words.  So spans
round-trip exactly, and a model that forgets ``<occK>`` falls back to the first
occurrence, which is almost always the right one.

Boxes.  Coordinates are quantised into NUM_BINS bins of the image's longer
side L = max(W, H) (the square canvas the image is letterboxed onto, top-left
aligned, see tensors.py), in the order x1 y1 x2 y2.  A box is written as the bins
it covers: ``k1 = floor(x1 * N / L)`` and ``k2 = ceil(x2 * N / L) - 1``, both
clamped to [0, N-1] (k2 >= k1).  It is read back as the covered area
``x1 = k1 * L / N``, ``x2 = (k2 + 1) * L / N``, clipped to the image.  Every
coordinate thus comes back within one bin (L / N pixels) of where it was,
bin-aligned boxes come back exactly, and no decoded box has zero area: a box
whose bins lie wholly in the letterbox padding (outside the image) is dropped.

``parse`` never raises: it reads what it can from any token sequence
(truncated, repeated, malformed) and silently drops the rest.

What this file does not do: tokenisation into ids (tensors.py), prompts and
task mixing (rmpl.py), scoring (evaluate.py).
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Sequence, Union

SCHEMA_VERSION = "1"

# ----------------------------------------------------------------------------- the 8 M2E2 types
# type -> (text roles, image roles), spelled exactly as in the M2E2 files.
EVENT_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Conflict:Attack": (("Attacker", "Target", "Instrument", "Place"),
                        ("Attacker", "Target", "Instrument")),
    "Conflict:Demonstrate": (("Entity", "Place", "Police"),
                             ("Entity", "Police", "Instrument", "Place")),
    "Contact:Meet": (("Entity", "Place"), ("Entity",)),
    "Contact:Phone-Write": (("Entity", "Place"), ("Entity", "Instrument")),
    "Justice:Arrest-Jail": (("Person", "Agent", "Place"), ("Person", "Agent", "Instrument")),
    "Life:Die": (("Victim", "Agent", "Place", "Instrument"), ("Victim", "Instrument")),
    "Movement:Transport": (("Artifact", "Destination", "Origin", "Agent", "Vehicle"),
                           ("Artifact", "Vehicle", "Agent")),
    "Transaction:Transfer-Money": (("Giver", "Recipient"), ("Giver", "Recipient", "Money")),
}
TEXT_ROLES = {t: roles[0] for t, roles in EVENT_TYPES.items()}
IMAGE_ROLES = {t: roles[1] for t, roles in EVENT_TYPES.items()}
ROLES: tuple[str, ...] = tuple(sorted({r for text, image in EVENT_TYPES.values()
                                       for r in text + image}))

# ACE 2005 subtype names as they appear in JMEE-style files -> M2E2 type; other subtypes are
# dropped.
ACE_TO_M2E2 = {t: t for t in EVENT_TYPES}
ACE_TO_M2E2.update({"Justice:Arrest_Jail": "Justice:Arrest-Jail",
                    "Contact:Phone_Write": "Contact:Phone-Write",
                    "Transaction:Transfer_Money": "Transaction:Transfer-Money"})

# The 23 MNRE relation labels (MNRE v2), "None" included: the relation task must also learn to
# say no.
MNRE_LABELS: tuple[str, ...] = (
    "/per/per/parent", "/per/per/siblings", "/per/per/couple", "/per/per/neighbor", "/per/per/peer",
    "/per/per/charges", "/per/per/alumi", "/per/per/alternate_names", "/per/org/member_of",
    "/per/loc/place_of_residence", "/per/loc/place_of_birth", "/org/org/alternate_names",
    "/org/org/subsidiary", "/org/loc/locate_at", "/loc/loc/contain", "/per/misc/present_in",
    "/per/misc/awarded", "/per/misc/race", "/per/misc/religion", "/per/misc/nationality",
    "/misc/misc/part_of", "/misc/loc/held_on", "None",
)


def sr_event_type(mapping_type: str) -> str | None:
    """``ace_sr_mapping.txt`` writes types as 'Justice||Arrest|Jail'; return the M2E2 spelling
    (or None)."""
    parent, _, sub = mapping_type.partition("||")
    name = f"{parent}:{sub.replace('|', '-')}"
    for t in EVENT_TYPES:  # the file also spells 'Transfer|MONEY'
        if t.lower() == name.lower():
            return t
    return None


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class Span:
    """Word offsets in a sentence, end exclusive (as in the M2E2 and JMEE files)."""
    start: int
    end: int


@dataclass(frozen=True)
class Box:
    """A box in original-image pixels, x-first: (x1, y1) top-left, (x2, y2) bottom-right."""
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass(frozen=True)
class Argument:
    role: str
    target: Union[Span, Box]


@dataclass(frozen=True)
class TextEvent:
    event_type: str
    trigger: Span
    arguments: tuple[Argument, ...] = ()


@dataclass(frozen=True)
class ImageEvent:
    event_type: str
    arguments: tuple[Argument, ...] = ()


@dataclass(frozen=True)
class Relation:
    label: str
    head: Union[Span, Box]
    tail: Union[Span, Box]


Record = Union[TextEvent, ImageEvent, Relation]


@dataclass
class Sentence:
    """One sentence with its gold events; ``images`` names the document's image ids (M2E2 only)."""
    id: str
    words: tuple[str, ...]
    events: tuple[TextEvent, ...] = ()
    images: tuple[str, ...] = ()

    @property
    def doc_id(self) -> str:
        return doc_id(self.id)


@dataclass
class Image:
    """One image: ``size`` = (width, height) of the file, None when only annotations are loaded;
    ``path`` likewise."""
    id: str
    size: tuple[int, int] | None
    events: tuple[ImageEvent, ...] = ()
    path: str | None = None

    @property
    def doc_id(self) -> str:
        return doc_id(self.id)


@dataclass
class RelationExample:
    """A sentence, optionally with its image, and the relations between its entities (MNRE)."""
    id: str
    words: tuple[str, ...]
    relations: tuple[Relation, ...]
    image: Image | None = None


@dataclass
class Link:
    """A cross-media coreference: the event of ``event_type`` in sentence ``sentence_id`` is shown
    in ``image_id``."""
    sentence_id: str
    image_id: str
    event_type: str


@dataclass
class Predictions:
    """What a system predicted for M2E2 (ids as in the gold, no ``.jpg``): written by rmpl.py,
    scored by evaluate.py."""
    sentences: dict[str, list[TextEvent]] = field(default_factory=dict)
    images: dict[str, list[ImageEvent]] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)


def doc_id(item_id: str) -> str:
    """M2E2 ids are '<doc_id>_<k>' for sentences and images alike."""
    return item_id.rsplit("_", 1)[0]


# ----------------------------------------------------------------------------- the token set
NUM_BINS = 64  # location bins per coordinate; with MAX_OCC this fixes the special-token set
MAX_OCC = 8    # occurrence tokens <occ2> .. <occ8>

TASKS: tuple[str, ...] = (
    "text_event",      # stage 1: sentence -> all its events with arguments
    "image_event",     # stage 1: image -> its event with argument boxes
    "relation",        # stage 1: sentence + image -> relations between entities
    "text_mention",    # stage 2 EMI: sentence -> event types and triggers
    "image_mention",   # stage 2 EMI: image -> event type
    # stage 2 ARE: sentence + one event (type, trigger) -> that event with arguments
    "text_argument",
    "image_argument",  # stage 2 ARE: image + one event type -> that event with argument boxes
)
TASK_TOKENS = {t: f"<task:{t}>" for t in TASKS}
TYPE_TOKENS = {t: f"<t:{t}>" for t in EVENT_TYPES}
ROLE_TOKENS = {r: f"<r:{r}>" for r in ROLES}
REL_TOKENS = {label: f"<rel:{label}>" for label in MNRE_LABELS}
LOC_TOKENS = tuple(f"<loc_{k}>" for k in range(NUM_BINS))
OCC_TOKENS = {k: f"<occ{k}>" for k in range(2, MAX_OCC + 1)}
HEAD, TAIL, SEP = "<head>", "<tail>", "<sep>"

# Every token that must be one id of the vocabulary, in a fixed order (the tokenizer relies on it).
SPECIAL_TOKENS: tuple[str, ...] = (
    *TASK_TOKENS.values(), *TYPE_TOKENS.values(), *ROLE_TOKENS.values(), *REL_TOKENS.values(),
    *LOC_TOKENS, *OCC_TOKENS.values(), HEAD, TAIL, SEP,
)

_TYPE_OF = {tok: t for t, tok in TYPE_TOKENS.items()}
_ROLE_OF = {tok: r for r, tok in ROLE_TOKENS.items()}
_REL_OF = {tok: label for label, tok in REL_TOKENS.items()}
_LOC_OF = {tok: k for k, tok in enumerate(LOC_TOKENS)}
_OCC_OF = {tok: k for k, tok in OCC_TOKENS.items()}
_SPECIAL = frozenset(SPECIAL_TOKENS)


# ------------------------------------------------------------------------ boxes <-> location tokens
def box_to_tokens(box: Box, size: tuple[int, int]) -> list[str]:
    """Quantise a box of an image of ``size`` = (W, H) to 4 location tokens (rule: module
    docstring)."""
    scale = NUM_BINS / max(size)
    k1 = [min(max(math.floor(v * scale), 0), NUM_BINS - 1) for v in (box.x1, box.y1)]
    k2 = [min(max(math.ceil(v * scale) - 1, k), NUM_BINS - 1) for v, k in zip((box.x2, box.y2), k1)]
    return [LOC_TOKENS[k] for k in (k1[0], k1[1], k2[0], k2[1])]


def tokens_to_box(tokens: Sequence[str], size: tuple[int, int]) -> Box | None:
    """Inverse of ``box_to_tokens``: the area the bins cover, clipped to the image (swapped if
    reversed). None when that area lies wholly outside the image: a model can write bins of the
    letterbox padding beyond a non-square image's short side, and no object is there."""
    kx1, ky1, kx2, ky2 = (_LOC_OF[t] for t in tokens)
    kx1, kx2 = min(kx1, kx2), max(kx1, kx2)
    ky1, ky2 = min(ky1, ky2), max(ky1, ky2)
    side = max(size) / NUM_BINS
    w, h = size
    if kx1 * side >= w or ky1 * side >= h:
        return None
    return Box(kx1 * side, ky1 * side, min((kx2 + 1) * side, w), min((ky2 + 1) * side, h))


# ----------------------------------------------------------------------------- spans <-> words
def _occurrences(words: Sequence[str], phrase: Sequence[str]) -> list[int]:
    n = len(phrase)
    return [i for i in range(len(words) - n + 1) if n and tuple(words[i:i + n]) == tuple(phrase)]


def span_to_tokens(span: Span, words: Sequence[str]) -> list[str]:
    """The span's words, followed by ``<occK>`` when it is the K-th (K >= 2) occurrence of those
    words."""
    phrase = list(words[span.start:span.end])
    k = _occurrences(words, phrase).index(span.start) + 1
    if k > MAX_OCC:
        raise ValueError(f"span {span} is occurrence {k} of {' '.join(phrase)!r}; "
                         f"the schema writes at most {MAX_OCC}")
    return phrase + ([OCC_TOKENS[k]] if k > 1 else [])


def _value_tokens(target: Span | Box, words, size) -> list[str]:
    if isinstance(target, Span):
        if words is None:
            raise ValueError(f"{target} needs the sentence's words")
        return span_to_tokens(target, words)
    if size is None:
        raise ValueError(f"{target} needs the image size")
    return box_to_tokens(target, size)


# ----------------------------------------------------------------------------- linearise
def linearise(records: Sequence[Record], words: Sequence[str] | None = None,
              size: tuple[int, int] | None = None) -> list[str]:
    """Records -> target tokens, in the order given (readers sort them canonically).

    ``words`` (the sentence) is needed for spans, ``size`` (W, H of the image) for boxes.
    Raises ValueError for a record the schema cannot write (unknown type or role, a span not in
    words).
    """
    out: list[str] = []
    for rec in records:
        if isinstance(rec, Relation):
            out += [REL_TOKENS[rec.label], HEAD, *_value_tokens(rec.head, words, size),
                    TAIL, *_value_tokens(rec.tail, words, size)]
            continue
        out.append(TYPE_TOKENS[rec.event_type])
        if isinstance(rec, TextEvent):
            out += span_to_tokens(rec.trigger, words)
        for arg in rec.arguments:
            out += [ROLE_TOKENS[arg.role], *_value_tokens(arg.target, words, size)]
    return out


# ----------------------------------------------------------------------------- parse
def _read_value(tokens, i, words, size):
    """Read a span (words [+ <occK>]) or a box (4 loc tokens) at position i -> (target or None,
    next i)."""
    if i < len(tokens) and tokens[i] in _LOC_OF:
        locs = []
        while i < len(tokens) and tokens[i] in _LOC_OF and len(locs) < 4:
            locs.append(tokens[i])
            i += 1
        ok = len(locs) == 4 and size is not None and max(size) > 0
        return (tokens_to_box(locs, size) if ok else None), i
    phrase = []
    while i < len(tokens) and tokens[i] not in _SPECIAL:
        phrase.append(tokens[i])
        i += 1
    k = 1
    if i < len(tokens) and tokens[i] in _OCC_OF:
        k = _OCC_OF[tokens[i]]
        i += 1
    starts = _occurrences(words, phrase) if words is not None else []
    if len(starts) < k:
        return None, i
    return Span(starts[k - 1], starts[k - 1] + len(phrase)), i


def _skip_to_record(tokens, i):
    while i < len(tokens) and tokens[i] not in _TYPE_OF and tokens[i] not in _REL_OF:
        i += 1
    return i


def parse(tokens: Sequence[str], words: Sequence[str] | None = None,
          size: tuple[int, int] | None = None) -> list[Record]:
    """Target tokens -> records; the inverse of ``linearise``. Never raises.

    Reads any sequence: what cannot be read is skipped (a span whose words are not in the
    sentence, a box with fewer than 4 location tokens, a role that the event's type does not have
    in that modality, an incomplete relation). A type token followed by words is a text event (the
    words are its trigger); a type token followed by anything else is an image event. Exact
    duplicates are dropped.
    """
    if not isinstance(tokens, Iterable):  # None or a number: nothing to read
        return []
    # anything that is not a string matches no token of the schema
    tokens = [str(t) for t in tokens]
    records: list[Record] = []
    # No try/except: every read checks the index before it looks and moves i forward, so the loop
    # ends and nothing raises; a bug here should fail the fuzz tests, not silently drop the records
    # after it.
    i = _skip_to_record(tokens, 0)
    while i < len(tokens):
        rec, i = _read_record(tokens, i, words, size)
        if rec is not None and rec not in records:
            records.append(rec)
        i = _skip_to_record(tokens, i)
    return records


def _read_record(tokens, i, words, size):
    head = tokens[i]
    if head in _REL_OF:
        if tokens[i + 1:i + 2] != [HEAD]:
            return None, i + 1
        h, i = _read_value(tokens, i + 2, words, size)
        if tokens[i:i + 1] != [TAIL]:
            return None, i
        t, i = _read_value(tokens, i + 1, words, size)
        return (Relation(_REL_OF[head], h, t) if h and t else None), i
    event_type = _TYPE_OF[head]
    i += 1
    trigger = None
    if i < len(tokens) and tokens[i] not in _SPECIAL:
        trigger, i = _read_value(tokens, i, words, size)
        if trigger is None:  # trigger words not in the sentence: the event cannot be placed
            return None, _skip_to_record(tokens, i)
    # text events take span arguments with text roles, image events box arguments with image roles
    if trigger is None and size is None:  # no trigger and no image: nothing to attach the event to
        return None, _skip_to_record(tokens, i)
    allowed, kind = (TEXT_ROLES[event_type], Span) if trigger else (IMAGE_ROLES[event_type], Box)
    args: list[Argument] = []
    while i < len(tokens) and tokens[i] in _ROLE_OF:
        role = _ROLE_OF[tokens[i]]
        target, i = _read_value(tokens, i + 1, words, size)
        arg = Argument(role, target)
        if isinstance(target, kind) and role in allowed and arg not in args:
            args.append(arg)
    if trigger:
        return TextEvent(event_type, trigger, tuple(args)), i
    return ImageEvent(event_type, tuple(args)), i
