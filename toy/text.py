"""How the toy world's sentences are written: the vocabulary, the templates, and a sentence builder.

Sentences come from templates: several triggers per type (multi-word ones, passives), distractor
clauses and names that are no arguments, two-event sentences, and ambiguous words ("fired", "shot",
"met", "paid", "called", "took", "gave", "wrote") that are events only in some contexts. A template
reads "{Attacker} [attacked] {Target}": the bracketed words are the trigger, a capitalised slot is
an argument of that role, a lower-case slot ({per}, {gpe}) is a distractor that is no argument.

One event and its participants form a Story; every sentence and picture that shows the story names
(and draws) the same people, which is what makes a sentence and an image of one document co-refer.

Every choice is drawn from the random stream passed in, in a fixed order: changing the order of the
draws below changes the generated world.

What this file does not do: draw (pictures.py), write files or decide how many sentences of which
kind a source gets (world.py).
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from schema import IMAGE_ROLES

from .pictures import ANON, CAST, POLICE

# ============================================================================= the vocabulary
NAME_OF = {c: n for n, c in CAST.items()}  # shirt colour -> name
PLACES = ("Karsk", "Velma", "Oston", "Prima", "Lorn", "Dunmore", "Tarvik", "Bellhaven")
ORGS = (("the", "Union"), ("the", "Council"), ("Northbank",), ("Acme",))
GROUPS = ("protesters", "students", "workers", "villagers", "soldiers", "rebels", "civilians",
          "supporters")
ANON_NOUNS = ("man", "woman", "journalist", "student", "driver", "teacher")
POLICE_WORDS = (("police",), ("riot", "police"), ("officers",), ("security", "forces"))
# Filler kinds that are a pick from a list: kind -> (entity type, phrases); the last word is the
# head.
THINGS = {"gpe": ("GPE", [(p,) for p in PLACES]), "org": ("ORG", ORGS),
          "veh": ("VEH", [(v,) for v in ("bus", "car", "van")]),
          "wea": ("WEA", [("a", w) for w in ("rifle", "gun", "pistol")])}

# Per type: templates ([trigger], {Role}, {be} = was/were agreeing with the last filler).
TEMPLATES = {
    "Conflict:Attack": (
        "{Attacker} [attacked] {Target}", "{Attacker} [opened fire on] {Target}",
        "{Attacker} [fired] at {Target}", "{Attacker} [shot] {Target}",
        "{Attacker} [ambushed] {Target}", "{Target} {be} [attacked] by {Attacker}",
        "{Target} {be} [shot] by {Attacker}", "{Target} came under [fire] from {Attacker}",
        "{Attacker} launched an [assault] on {Target}"),
    "Conflict:Demonstrate": (
        "{Entity} [protested] against the new law", "{Entity} [took to the streets]",
        "{Entity} [marched] through the city", "{Entity} [rallied] outside parliament",
        "{Entity} [demonstrated] in front of {Police}",
        "{Police} watched as {Entity} [protested]",
        "a [protest] by {Entity} {be} broken up by {Police}"),
    "Contact:Meet": (
        "{Entity} [met] {Entity}", "{Entity} [met] with {Entity}",
        "{Entity} and {Entity} [held talks]", "{Entity} [visited] {Entity}",
        "{Entity} and {Entity} [shook hands]",
        "a [meeting] between {Entity} and {Entity} ended early", "{Entity} [hosted] {Entity}"),
    "Contact:Phone-Write": (
        "{Entity} [called] {Entity}", "{Entity} [phoned] {Entity}",
        "{Entity} [spoke by phone] with {Entity}", "{Entity} [wrote] to {Entity}",
        "{Entity} [sent a letter] to {Entity}", "{Entity} [emailed] {Entity}"),
    "Justice:Arrest-Jail": (
        "{Agent} [arrested] {Person}", "{Person} {be} [arrested] by {Agent}",
        "{Person} {be} [detained]", "{Agent} [detained] {Person}",
        "{Person} {be} [taken into custody] by {Agent}", "{Person} {be} [jailed]",
        "{Agent} [locked up] {Person}"),
    "Life:Die": (
        "{Victim} [died]", "{Victim} [passed away]", "{Victim} {be} [killed]",
        "{Agent} [killed] {Victim} with {Instrument}", "{Victim} {be} [killed] by {Agent}",
        "the [death] of {Victim} shocked the town", "{Victim} [lost their life]"),
    "Movement:Transport": (
        "{Artifact} [traveled] to {Destination}", "{Artifact} [arrived] in {Destination}",
        "{Agent} [drove] {Artifact} to {Destination}", "{Artifact} [moved] to {Destination}",
        "{Artifact} [returned] to {Destination}", "{Artifact} [left] {Origin}",
        "{Agent} [took] {Artifact} to {Destination}", "{Artifact} {be} [evacuated] from {Origin}"),
    "Transaction:Transfer-Money": (
        "{Giver} [paid] {Recipient} {amount}", "{Giver} [gave] {Recipient} {amount}",
        "{Recipient} [received] {amount} from {Giver}",
        "{Giver} [donated] {amount} to {Recipient}", "{Giver} [lent] {Recipient} {amount}",
        "{Giver} [transferred] funds to {Recipient}", "{Recipient} {be} [paid] by {Giver}"),
}
# Per type: the filler kind of each role ("per|grp": a person or a group).
KINDS = {
    "Conflict:Attack": {"Attacker": "per|grp", "Target": "per|grp", "Instrument": "wea",
                        "Place": "gpe"},
    "Conflict:Demonstrate": {"Entity": "grp", "Police": "pol", "Place": "gpe"},
    "Contact:Meet": {"Entity": "per", "Place": "gpe"},
    "Contact:Phone-Write": {"Entity": "per", "Place": "gpe"},
    "Justice:Arrest-Jail": {"Person": "per", "Agent": "pol", "Place": "gpe"},
    "Life:Die": {"Victim": "per", "Agent": "per|grp", "Place": "gpe", "Instrument": "wea"},
    "Movement:Transport": {"Artifact": "per|grp", "Destination": "gpe", "Origin": "gpe",
                           "Agent": "per", "Vehicle": "veh"},
    "Transaction:Transfer-Money": {"Giver": "per|org", "Recipient": "per|org"},
}
# Per type: modifiers (role, preposition, probability) appended when the template lacks the role.
MODS = {"Conflict:Attack": (("Instrument", "with", .3), ("Place", "in", .35)),
        "Conflict:Demonstrate": (("Place", "in", .4),),
        "Contact:Meet": (("Place", "in", .4),),
        "Contact:Phone-Write": (("Place", "from", .15),),
        "Justice:Arrest-Jail": (("Place", "in", .35),),
        "Life:Die": (("Place", "in", .35),),
        "Transaction:Transfer-Money": (),
        "Movement:Transport": (("Origin", "from", .3), ("Destination", "to", .5),
                               ("Vehicle", "by", .3))}
# ACE events of types M2E2 does not have (the reader drops them): (type, template, role kinds).
OTHER_ACE = (
    ("Business:Merge-Org", "{Org} [merged] with {Org}", {"Org": "org"}),
    ("Personnel:Elect", "{Person} {be} [elected] mayor of {Place}",
     {"Person": "per", "Place": "gpe"}),
    ("Personnel:End-Position", "{Entity} [fired] {Person}", {"Entity": "per|org", "Person": "emp"}),
    ("Justice:Charge-Indict", "{Defendant} {be} [charged] with fraud", {"Defendant": "per"}),
    ("Life:Marry", "{Person} [married] {Person}", {"Person": "per"}),
    ("Life:Be-Born", "{Person} {be} [born] in {Place}", {"Person": "per", "Place": "gpe"}))
# Event-free sentences ({kind} slots are no arguments); several use a trigger word in a sense that
# is no event, so a model must read the context.
FILLERS = (
    "{per} works for {org}", "the weather in {gpe} was cold",
    "{org} announced new plans for {gpe}", "{per} said the talks would continue",
    "prices rose again in {gpe}", "{per} is a teacher in {gpe}",
    "the report was published on Tuesday", "{per} praised the decision",
    "{org} opened an office in {gpe}", "{per} lives in {gpe}", "critics said the plan would fail",
    "{per} shot a film in {gpe}", "{per} met the deadline", "{per} paid tribute to the victims",
    "{per} called the plan a mistake", "the film moved {per} to tears",
    "{per} took a photo of the bridge", "{per} gave a speech in {gpe}",
    "{per} wrote a book about {gpe}", "{per} charged the phone",
    "{org} fired its chief executive", "{per} visited the museum in {gpe}",
    "the market in {gpe} reopened", "{per} left the party early",
    "{org} expects growth next year", "schools in {gpe} will close for the holiday",
    "{per} is a nurse", "the bridge near {gpe} needs repairs", "{per} and {per} are old friends",
    "{org} hired new staff", "the storm hit {gpe} overnight", "the talks are expected to resume",
    "{per} thanked the volunteers", "the museum in {gpe} opened a new hall",
    "{per} disagreed with {org}", "the harvest was good this year")
TIMES = ("on Monday ,", "last week ,")  # ACE marks these as Time-Within arguments
PREFIXES = ("earlier ,", "according to {per} ,", "officials said", "witnesses said")
SUFFIXES = (", {per} said", ", officials said", ", a spokesman for {org} said",
            ", while {per} looked on", ", reports said", "on Sunday")
TEMPLATE_TOKEN = re.compile(r"\[[^\]]+\]|\{\w+\}|[^\s\[{]+")


# ============================================================================= fillers and stories
@dataclass
class Fill:
    """A filler phrase: its words, the (start, end, entity type) of its entity heads (relative),
    and the shirts of the people it names (for pictures of the same story)."""
    words: tuple[str, ...]
    heads: tuple[tuple[int, int, str], ...]
    plural: bool = False
    shirts: tuple = ()


def headed(words, etype="PER", plural=False, shirts=()) -> Fill:
    """A filler whose entity head is its last word ("a journalist", "riot police", "Karsk")."""
    return Fill(tuple(words), ((len(words) - 1, len(words), etype),), plural, tuple(shirts))


def make_fill(rng, kinds: str, avoid=()) -> Fill:
    """A filler of one of `kinds` ("per|grp"), never naming a person in `avoid`."""
    kind = rng.choice(kinds.split("|"))
    names = [n for n in CAST if n not in avoid]
    if kind == "per":
        if rng.random() < .65:
            n = rng.choice(names)
            return headed((n,), shirts=(CAST[n],))
        return headed(("a", rng.choice(ANON_NOUNS)), shirts=(rng.choice(ANON),))
    if kind == "grp":
        if rng.random() < .25:
            a, b = rng.sample(names, 2)
            return Fill((a, "and", b), ((0, 1, "PER"), (2, 3, "PER")), True, (CAST[a], CAST[b]))
        q = rng.choice(((), ("hundreds", "of"), ("dozens", "of"), ("several",), ("the",)))
        return headed(q + (rng.choice(GROUPS),), plural=True,
                      shirts=[rng.choice(ANON) for _ in range(rng.randint(2, 3))])
    if kind == "pol":
        return headed(rng.choice(POLICE_WORDS), plural=True, shirts=(POLICE,) * rng.randint(1, 2))
    if kind == "emp":  # the object of 'fired' in its no-M2E2-event sense
        return headed(("an", "employee") if rng.random() < .5 else ("a", "manager"))
    etype, phrases = THINGS[kind]
    return headed(rng.choice(phrases), etype)


@dataclass
class Story:
    """One event with its participants: role -> fills, shared by every sentence and picture that
    shows it."""
    event_type: str
    fills: dict = field(default_factory=dict)

    def names(self) -> set:
        shirts = (s for fs in self.fills.values() for f in fs for s in f.shirts)
        return {NAME_OF[s] for s in shirts if s in NAME_OF}

    def figs(self) -> dict:
        """Image role -> shirts of the people the text names (Phone-Write: only the caller holds a
        phone)."""
        out = {}
        for role, fs in self.fills.items():
            if role in IMAGE_ROLES[self.event_type] and role not in ("Instrument", "Vehicle"):
                fs = fs[:1] if self.event_type == "Contact:Phone-Write" else fs
                shirts = [s for f in fs for s in f.shirts]
                if shirts:
                    out[role] = shirts
        return out


# ============================================================================= sentences
class Builder:
    """One sentence under construction: its words, entity mentions (start, end, type) and events."""

    def __init__(self):
        self.words, self.entities, self.events = [], [], []

    def lit(self, text):
        self.words += text.split()

    def put(self, fill: Fill) -> list[tuple[int, int]]:
        """Append a filler; returns the spans of its entity heads (the argument spans)."""
        s = len(self.words)
        self.words += fill.words
        self.entities += [(s + a, s + b, t) for a, b, t in fill.heads]
        return [(s + a, s + b) for a, b, _ in fill.heads]

    def template(self, rng, tmpl: str, fill_of, event_type=None):
        """Render a template; fill_of(slot, k) gives the k-th filler of a slot. Capitalised slots
        are arguments; with an event type the event is recorded. Returns (slot counts, [(role,
        span)])."""
        trigger, args, seen, plural = None, [], Counter(), False
        for tok in TEMPLATE_TOKEN.findall(tmpl):
            if tok.startswith("["):
                s = len(self.words)
                self.lit(tok[1:-1])
                trigger = (s, len(self.words))
            elif tok == "{be}":
                self.lit("were" if plural else "was")
            elif tok == "{amount}":
                self.lit(f"{rng.choice((200, 500, 1000, 3000))} dollars")
            elif tok.startswith("{"):
                slot = tok[1:-1]
                f = fill_of(slot, seen[slot])
                seen[slot] += 1
                plural = f.plural
                spans = self.put(f)
                if slot[0].isupper():
                    args += [(slot, sp) for sp in spans]
            else:
                self.lit(tok)
        if event_type:
            self.events.append([event_type, trigger, args])
        return seen, args


def clause(b: Builder, rng, story: Story):
    """One clause that tells `story` (a template + modifiers); new participants join the story, so
    later sentences and pictures of it show the same people."""
    t = story.event_type

    def fill_of(role, k):
        fs = story.fills.setdefault(role, [])
        while len(fs) <= k:
            used = {f.words for g in story.fills.values() for f in g}
            f = make_fill(rng, KINDS[t][role], avoid=story.names())
            while f.words in used:  # no 'Acme paid Acme'
                f = make_fill(rng, KINDS[t][role], avoid=story.names())
            fs.append(f)
        return fs[k]

    seen, args = b.template(rng, rng.choice(TEMPLATES[t]), fill_of, t)
    for role, prep, p in MODS[t]:
        if role not in seen and rng.random() < (.7 if role in story.fills else p):
            b.lit(prep)
            args += [(role, sp) for sp in b.put(fill_of(role, 0))]


def sentence(rng, stories=(), other=None, ace=False, names=()) -> dict:
    """A JMEE-style sentence record (no id): one clause per story (0-2), or one other-ACE event, or
    a filler, with an optional distractor prefix / suffix. The events come in the order of
    `stories`."""
    def distractor(kind, k):  # a {per} slot mostly names someone from `names` (the document's cast)
        if kind == "per" and names and rng.random() < .7:
            return headed((rng.choice(names),))
        return make_fill(rng, kind)

    b = Builder()
    time = rng.random() < .15
    if time:
        b.lit(rng.choice(TIMES))
    elif rng.random() < .2:
        b.template(rng, rng.choice(PREFIXES), distractor)
    for i, st in enumerate(stories):
        if i:
            b.lit(rng.choice((", and", "; later ,", "before")))
            prev = stories[i - 1].fills.get("Target", [])
            # 'X shot Y , and Y died': one person shot, then dead
            died = st.event_type == "Life:Die" and "Victim" not in st.fills
            if died and prev and not prev[0].plural:
                st.fills["Victim"] = prev[:1]
        clause(b, rng, st)
    if other:
        t, tmpl, kinds = other
        b.template(rng, tmpl, lambda role, k: make_fill(rng, kinds[role]), t if ace else None)
    elif not stories:
        b.template(rng, rng.choice(FILLERS), distractor)
    if rng.random() < .2:
        b.template(rng, rng.choice(SUFFIXES), distractor)
    b.lit(".")
    b.words[0] = b.words[0][:1].upper() + b.words[0][1:]
    return _record(b, time, ace)


def _record(b: Builder, time: bool, ace: bool) -> dict:
    """The JMEE record of a finished sentence; `time`: its first two words are a time mention, which
    ACE (`ace`) also marks as a Time-Within argument of every event."""
    w = b.words

    def text(s, e):
        return " ".join(w[s:e])

    events = []
    for t, (ts, te), args in b.events:
        arguments = [{"role": r, "start": s, "end": e, "text": text(s, e)} for r, (s, e) in args]
        if time and ace:  # ACE marks times; the reader drops roles that are not M2E2 roles
            arguments.append({"role": "Time-Within", "start": 0, "end": 2, "text": text(0, 2)})
        trigger = {"start": ts, "end": te, "text": text(ts, te)}
        events.append({"trigger": trigger, "event_type": t, "arguments": arguments})
    ents = sorted(set(b.entities) | ({(0, 2, "TIME")} if time else set()))
    mentions = [{"entity-type": t, "text": text(s, e), "start": s, "end": e} for s, e, t in ents]
    return {"words": w, "sentence": " ".join(w), "golden-event-mentions": events,
            "golden-entity-mentions": mentions}
