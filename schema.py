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
aligned, see data.py), in the order x1 y1 x2 y2.  A box is written as the bins
it covers: ``k1 = floor(x1 * N / L)`` and ``k2 = ceil(x2 * N / L) - 1``, both
clamped to [0, N-1] (k2 >= k1).  It is read back as the covered area
``x1 = k1 * L / N``, ``x2 = (k2 + 1) * L / N``, clipped to the image.  Every
coordinate thus comes back within one bin (L / N pixels) of where it was,
bin-aligned boxes come back exactly, and no decoded box has zero area.

``parse`` never raises: it reads what it can from any token sequence
(truncated, repeated, malformed) and silently drops the rest.

What this file does not do: tokenisation into ids (data.py), prompts and
task mixing (rmpl.py), scoring (evaluate.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence, Union

SCHEMA_VERSION = "1"

# ----------------------------------------------------------------------------- the 8 M2E2 types
# type -> (text roles, image roles), spelled exactly as in the M2E2 files.
EVENT_TYPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Conflict:Attack": (("Attacker", "Target", "Instrument", "Place"), ("Attacker", "Target", "Instrument")),
    "Conflict:Demonstrate": (("Entity", "Place", "Police"), ("Entity", "Police", "Instrument", "Place")),
    "Contact:Meet": (("Entity", "Place"), ("Entity",)),
    "Contact:Phone-Write": (("Entity", "Place"), ("Entity", "Instrument")),
    "Justice:Arrest-Jail": (("Person", "Agent", "Place"), ("Person", "Agent", "Instrument")),
    "Life:Die": (("Victim", "Agent", "Place", "Instrument"), ("Victim", "Instrument")),
    "Movement:Transport": (("Artifact", "Destination", "Origin", "Agent", "Vehicle"), ("Artifact", "Vehicle", "Agent")),
    "Transaction:Transfer-Money": (("Giver", "Recipient"), ("Giver", "Recipient", "Money")),
}
TEXT_ROLES = {t: roles[0] for t, roles in EVENT_TYPES.items()}
IMAGE_ROLES = {t: roles[1] for t, roles in EVENT_TYPES.items()}
ROLES: tuple[str, ...] = tuple(sorted({r for text, image in EVENT_TYPES.values() for r in text + image}))

# ACE 2005 subtype names as they appear in JMEE-style files -> M2E2 type; other subtypes are dropped.
ACE_TO_M2E2 = {t: t for t in EVENT_TYPES}
ACE_TO_M2E2.update({"Justice:Arrest_Jail": "Justice:Arrest-Jail", "Contact:Phone_Write": "Contact:Phone-Write",
                    "Transaction:Transfer_Money": "Transaction:Transfer-Money"})

# The 23 MNRE relation labels (MNRE v2), "None" included: the relation task must also learn to say no.
MNRE_LABELS: tuple[str, ...] = (
    "/per/per/parent", "/per/per/siblings", "/per/per/couple", "/per/per/neighbor", "/per/per/peer",
    "/per/per/charges", "/per/per/alumi", "/per/per/alternate_names", "/per/org/member_of",
    "/per/loc/place_of_residence", "/per/loc/place_of_birth", "/org/org/alternate_names",
    "/org/org/subsidiary", "/org/loc/locate_at", "/loc/loc/contain", "/per/misc/present_in",
    "/per/misc/awarded", "/per/misc/race", "/per/misc/religion", "/per/misc/nationality",
    "/misc/misc/part_of", "/misc/loc/held_on", "None",
)


def sr_event_type(mapping_type: str) -> str | None:
    """``ace_sr_mapping.txt`` writes types as 'Justice||Arrest|Jail'; return the M2E2 spelling (or None)."""
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
    """One image: ``size`` = (width, height) of the file, None when only annotations are loaded; ``path`` likewise."""
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
    """A cross-media coreference: the event of ``event_type`` in sentence ``sentence_id`` is shown in ``image_id``."""
    sentence_id: str
    image_id: str
    event_type: str


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
    "text_argument",   # stage 2 ARE: sentence + one event (type, trigger) -> that event with arguments
    "image_argument",  # stage 2 ARE: image + one event type -> that event with argument boxes
    "coref",           # inference: sentence event + image -> <yes>/<no>, same event?
)
TASK_TOKENS = {t: f"<task:{t}>" for t in TASKS}
TYPE_TOKENS = {t: f"<t:{t}>" for t in EVENT_TYPES}
ROLE_TOKENS = {r: f"<r:{r}>" for r in ROLES}
REL_TOKENS = {label: f"<rel:{label}>" for label in MNRE_LABELS}
LOC_TOKENS = tuple(f"<loc_{k}>" for k in range(NUM_BINS))
OCC_TOKENS = {k: f"<occ{k}>" for k in range(2, MAX_OCC + 1)}
HEAD, TAIL, SEP, YES, NO, IMAGE = "<head>", "<tail>", "<sep>", "<yes>", "<no>", "<image>"

# Every token that must be one id of the vocabulary, in a fixed order (the tokenizer relies on it).
SPECIAL_TOKENS: tuple[str, ...] = (
    *TASK_TOKENS.values(), *TYPE_TOKENS.values(), *ROLE_TOKENS.values(), *REL_TOKENS.values(),
    *LOC_TOKENS, *OCC_TOKENS.values(), HEAD, TAIL, SEP, YES, NO, IMAGE,
)
