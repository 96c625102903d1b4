"""The toy multimedia world: a small, deterministic stand-in for ACE, SWiG, MNRE and M2E2.

The real training sets cannot be downloaded here, so this file generates a world in the real file formats
(layout: README / notes), and readers, training and the scorer run the same code as on real data::

    python toy.py --out data/toy --seed 0            # the default world, a few seconds
    python toy.py --stats data/toy                    # markdown table of what is in it
    python toy.py --draw data/toy --split test --doc toy-test-003 --png doc.png [--pred pred.jsonl]
    python toy.py --baseline data/toy --split test --pred keyword.jsonl

The world:

* 12 named people, each in one shirt colour everywhere ("Anna" is always red); unnamed people wear greys
  or beige, police navy with a cap.
* Pictures are compositions of bold figures on a sky/ground backdrop with clutter. An event type shows
  only in how figures relate: a gun held out at someone (Attack), signs held up (Demonstrate), two people
  face to face (Meet), a phone at the head (Phone-Write), police gripping someone or a person in a cage
  (Arrest-Jail), a person lying on the ground (Die), people in a vehicle (Transport), a bill held out to a
  reaching hand (Transfer-Money). Event-free scenes reuse the objects (a gun on the ground, a phone on a
  table, people back to back, someone asleep or eating). Argument boxes are the tight boxes of the drawing.
* Sentences come from templates: several triggers per type (multi-word ones, passives), distractor clauses
  and names that are no arguments, two-event sentences, and ambiguous words ("fired", "shot", "met",
  "paid", "called", "took", "gave", "wrote") that are events only in some contexts.
* ACE: ~65% of sentences carry M2E2 events (some two), ~12% only ACE types M2E2 lacks (the reader drops
  them, e.g. "fired an employee"). SWiG: 16 mapped verbs (two per type, our own ace_sr_mapping.txt) and 25%
  unmapped everyday verbs. MNRE: relations between named people (couple, siblings, peer, member_of,
  residence) and, with a box as the tail ('/per/misc/present_in'), which figure a name in the text is.
* M2E2 documents: 8-12 sentences (~85% event-free) and 1-4 images (~half with an event). A story told in a
  sentence and shown in an image shares its type and named people (drawn in their colours) and is linked;
  decoy images show the same type with other people (not linked: ~15% of same-type sentence-image pairs);
  some events are text-only or image-only.

Each source and split has its own random stream, and no training sentence equals an evaluation sentence,
so no evaluation document leaks into training. The same seed and sizes give the same bytes, which makes
the order of the random draws below part of the output: a refactor must keep it.

What this file does not do: parse the formats (--stats, --draw and --baseline read through data.py's
readers), score (evaluate.py), or learn anything.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path

from PIL import Image as PILImage, ImageDraw

from schema import EVENT_TYPES, IMAGE_ROLES

# ============================================================================= the world's vocabulary
TYPES = list(EVENT_TYPES)
CAST = {"Anna": (220, 30, 30), "Boris": (30, 70, 230), "Chen": (30, 160, 50), "Dina": (255, 140, 0),
        "Emil": (140, 40, 190), "Fatima": (245, 225, 0), "Goran": (0, 205, 215), "Hana": (255, 110, 200),
        "Ivan": (115, 65, 20), "Jana": (160, 235, 60), "Karim": (250, 250, 250), "Lena": (0, 110, 110)}
NAME_OF = {c: n for n, c in CAST.items()}
ANON = ((130, 130, 130), (85, 85, 85), (195, 185, 160), (165, 165, 185))  # unnamed people
POLICE, NAVY = "police", (20, 30, 90)
INK, SKIN = (25, 25, 25), ((240, 200, 160), (205, 150, 110), (150, 100, 70))
SKIES = ((200, 225, 245), (225, 235, 245), (240, 230, 210), (215, 235, 220))
GROUNDS = ((175, 165, 140), (150, 175, 120), (190, 190, 190), (165, 150, 150))
PLACES = ("Karsk", "Velma", "Oston", "Prima", "Lorn", "Dunmore", "Tarvik", "Bellhaven")
ORGS = (("the", "Union"), ("the", "Council"), ("Northbank",), ("Acme",))
GROUPS = ("protesters", "students", "workers", "villagers", "soldiers", "rebels", "civilians", "supporters")
ANON_NOUNS = ("man", "woman", "journalist", "student", "driver", "teacher")
POLICE_WORDS = (("police",), ("riot", "police"), ("officers",), ("security", "forces"))
# Filler kinds that are just a pick from a list: kind -> (entity type, phrases); the head is the last word.
THINGS = {"gpe": ("GPE", [(p,) for p in PLACES]), "org": ("ORG", ORGS),
          "veh": ("VEH", [(v,) for v in ("bus", "car", "van")]),
          "wea": ("WEA", [("a", w) for w in ("rifle", "gun", "pistol")])}

# Per type: templates ([trigger], {Role}, {be} = was/were agreeing with the last filler), the filler kind of
# each role, and optional modifiers (role, preposition, probability) appended when the template lacks them.
TEMPLATES = {
    "Conflict:Attack": ("{Attacker} [attacked] {Target}", "{Attacker} [opened fire on] {Target}",
                        "{Attacker} [fired] at {Target}", "{Attacker} [shot] {Target}",
                        "{Attacker} [ambushed] {Target}",
                        "{Target} {be} [attacked] by {Attacker}", "{Target} {be} [shot] by {Attacker}",
                        "{Target} came under [fire] from {Attacker}", "{Attacker} launched an [assault] on {Target}"),
    "Conflict:Demonstrate": ("{Entity} [protested] against the new law", "{Entity} [took to the streets]",
                             "{Entity} [marched] through the city", "{Entity} [rallied] outside parliament",
                             "{Entity} [demonstrated] in front of {Police}", "{Police} watched as {Entity} [protested]",
                             "a [protest] by {Entity} {be} broken up by {Police}"),
    "Contact:Meet": ("{Entity} [met] {Entity}", "{Entity} [met] with {Entity}", "{Entity} and {Entity} [held talks]",
                     "{Entity} [visited] {Entity}", "{Entity} and {Entity} [shook hands]",
                     "a [meeting] between {Entity} and {Entity} ended early", "{Entity} [hosted] {Entity}"),
    "Contact:Phone-Write": ("{Entity} [called] {Entity}", "{Entity} [phoned] {Entity}",
                            "{Entity} [spoke by phone] with {Entity}", "{Entity} [wrote] to {Entity}",
                            "{Entity} [sent a letter] to {Entity}", "{Entity} [emailed] {Entity}"),
    "Justice:Arrest-Jail": ("{Agent} [arrested] {Person}", "{Person} {be} [arrested] by {Agent}",
                            "{Person} {be} [detained]", "{Agent} [detained] {Person}",
                            "{Person} {be} [taken into custody] by {Agent}", "{Person} {be} [jailed]",
                            "{Agent} [locked up] {Person}"),
    "Life:Die": ("{Victim} [died]", "{Victim} [passed away]", "{Victim} {be} [killed]",
                 "{Agent} [killed] {Victim} with {Instrument}", "{Victim} {be} [killed] by {Agent}",
                 "the [death] of {Victim} shocked the town", "{Victim} [lost their life]"),
    "Movement:Transport": ("{Artifact} [traveled] to {Destination}", "{Artifact} [arrived] in {Destination}",
                           "{Agent} [drove] {Artifact} to {Destination}", "{Artifact} [moved] to {Destination}",
                           "{Artifact} [returned] to {Destination}", "{Artifact} [left] {Origin}",
                           "{Agent} [took] {Artifact} to {Destination}", "{Artifact} {be} [evacuated] from {Origin}"),
    "Transaction:Transfer-Money": ("{Giver} [paid] {Recipient} {amount}", "{Giver} [gave] {Recipient} {amount}",
                                   "{Recipient} [received] {amount} from {Giver}",
                                   "{Giver} [donated] {amount} to {Recipient}", "{Giver} [lent] {Recipient} {amount}",
                                   "{Giver} [transferred] funds to {Recipient}", "{Recipient} {be} [paid] by {Giver}"),
}
KINDS = {
    "Conflict:Attack": {"Attacker": "per|grp", "Target": "per|grp", "Instrument": "wea", "Place": "gpe"},
    "Conflict:Demonstrate": {"Entity": "grp", "Police": "pol", "Place": "gpe"},
    "Contact:Meet": {"Entity": "per", "Place": "gpe"},
    "Contact:Phone-Write": {"Entity": "per", "Place": "gpe"},
    "Justice:Arrest-Jail": {"Person": "per", "Agent": "pol", "Place": "gpe"},
    "Life:Die": {"Victim": "per", "Agent": "per|grp", "Place": "gpe", "Instrument": "wea"},
    "Movement:Transport": {"Artifact": "per|grp", "Destination": "gpe", "Origin": "gpe", "Agent": "per",
                           "Vehicle": "veh"},
    "Transaction:Transfer-Money": {"Giver": "per|org", "Recipient": "per|org"},
}
MODS = {"Conflict:Attack": (("Instrument", "with", .3), ("Place", "in", .35)),
        "Conflict:Demonstrate": (("Place", "in", .4),), "Contact:Meet": (("Place", "in", .4),),
        "Contact:Phone-Write": (("Place", "from", .15),), "Justice:Arrest-Jail": (("Place", "in", .35),),
        "Life:Die": (("Place", "in", .35),), "Transaction:Transfer-Money": (),
        "Movement:Transport": (("Origin", "from", .3), ("Destination", "to", .5), ("Vehicle", "by", .3))}
# ACE events of types M2E2 does not have (the reader drops them): (type, template, role kinds).
OTHER_ACE = (("Business:Merge-Org", "{Org} [merged] with {Org}", {"Org": "org"}),
             ("Personnel:Elect", "{Person} {be} [elected] mayor of {Place}", {"Person": "per", "Place": "gpe"}),
             ("Personnel:End-Position", "{Entity} [fired] {Person}", {"Entity": "per|org", "Person": "emp"}),
             ("Justice:Charge-Indict", "{Defendant} {be} [charged] with fraud", {"Defendant": "per"}),
             ("Life:Marry", "{Person} [married] {Person}", {"Person": "per"}),
             ("Life:Be-Born", "{Person} {be} [born] in {Place}", {"Person": "per", "Place": "gpe"}))
# Event-free sentences ({kind} slots are no arguments); several use a trigger word in a sense that is no event.
FILLERS = ("{per} works for {org}", "the weather in {gpe} was cold", "{org} announced new plans for {gpe}",
           "{per} said the talks would continue", "prices rose again in {gpe}", "{per} is a teacher in {gpe}",
           "the report was published on Tuesday", "{per} praised the decision", "{org} opened an office in {gpe}",
           "{per} lives in {gpe}", "critics said the plan would fail", "{per} shot a film in {gpe}",
           "{per} met the deadline", "{per} paid tribute to the victims", "{per} called the plan a mistake",
           "the film moved {per} to tears", "{per} took a photo of the bridge", "{per} gave a speech in {gpe}",
           "{per} wrote a book about {gpe}", "{per} charged the phone", "{org} fired its chief executive",
           "{per} visited the museum in {gpe}", "the market in {gpe} reopened", "{per} left the party early",
           "{org} expects growth next year", "schools in {gpe} will close for the holiday", "{per} is a nurse",
           "the bridge near {gpe} needs repairs", "{per} and {per} are old friends", "{org} hired new staff",
           "the storm hit {gpe} overnight", "the talks are expected to resume", "{per} thanked the volunteers",
           "the museum in {gpe} opened a new hall", "{per} disagreed with {org}", "the harvest was good this year")
TIMES = ("on Monday ,", "last week ,")  # ACE marks these as Time-Within arguments
PREFIXES = ("earlier ,", "according to {per} ,", "officials said", "witnesses said")
SUFFIXES = (", {per} said", ", officials said", ", a spokesman for {org} said", ", while {per} looked on",
            ", reports said", "on Sunday")
TEMPLATE_TOKEN = re.compile(r"\[[^\]]+\]|\{\w+\}|[^\s\[{]+")


@dataclass
class Sizes:
    """How much of each source to write: sentences (ace), images (swig), lines (mnre), documents (m2e2)."""
    ace_train: int = 1500
    ace_dev: int = 200
    ace_test: int = 200
    swig_train: int = 1200
    swig_dev: int = 150
    swig_test: int = 150
    mnre_train: int = 800
    mnre_dev: int = 100
    mnre_test: int = 100
    m2e2_dev: int = 40
    m2e2_test: int = 40


# ============================================================================= drawing
class Canvas:
    """A pillow picture on a sky/ground backdrop that remembers its figures as (role, box, shirt, kind).

    The draw calls inside `with cv.figure(...)` grow one extent, so a figure's box is the tight box of
    what was drawn for it, in pixels, clipped to the picture: argument boxes are exact by construction."""

    def __init__(self, rng: random.Random):
        self.rng, self.W, self.H = rng, rng.randint(96, 160), rng.randint(96, 160)
        self.im = PILImage.new("RGB", (self.W, self.H), rng.choice(SKIES))
        self.d = ImageDraw.Draw(self.im)
        self.horizon = rng.uniform(.45, .7) * self.H
        self.d.rectangle([0, self.horizon, self.W, self.H], fill=rng.choice(GROUNDS))
        self.figs, self.used, self.span = [], set(), (0, 0)

    def shirt(self, named: float = .4):
        """A shirt not yet in the picture: a cast colour with probability `named`, else an anonymous one."""
        free = [c for c in CAST.values() if c not in self.used]
        c = self.rng.choice(free) if free and self.rng.random() < named else self.rng.choice(ANON)
        self.used.add(c)
        return c

    @contextmanager
    def figure(self, kind, role=None, shirt=None):
        self.ext = [1e9, 1e9, -1e9, -1e9]  # empty: the first draw call sets it
        yield
        x1, y1, x2, y2 = self.ext  # outward to whole pixels, so the box covers every drawn pixel
        box = (max(0, int(x1)), max(0, int(y1)), min(self.W, int(x2 + .999)), min(self.H, int(y2 + .999)))
        self.figs.append((role, box, shirt, kind))

    def _grow(self, x1, y1, x2, y2, pad=0.0):
        e = self.ext
        e[:] = [min(e[0], x1 - pad), min(e[1], y1 - pad), max(e[2], x2 + pad), max(e[3], y2 + pad)]

    def rect(self, x1, y1, x2, y2, fill, outline=INK):
        x1, x2, y1, y2 = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
        self.d.rectangle([x1, y1, x2, y2], fill=fill, outline=outline)
        self._grow(x1, y1, x2 + 1, y2 + 1)

    def ellipse(self, cx, cy, rx, ry, fill, outline=INK):
        self.d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=fill, outline=outline)
        self._grow(cx - rx, cy - ry, cx + rx + 1, cy + ry + 1)

    def line(self, pts, fill, width):
        self.d.line(pts, fill=fill, width=max(1, round(width)), joint="curve")
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        self._grow(min(xs), min(ys), max(xs) + 1, max(ys) + 1, pad=width / 2)


# ----------------------------------------------------------------------------- figures
ARMS = {  # (elbow, hand) relative to the shoulder, in figure heights, x towards the way the figure faces
    "down": ((.06, .14), (.05, .3)), "forward": ((.17, .02), (.34, 0)), "reach": ((.14, .1), (.3, .14)),
    "up": ((.08, -.14), (.1, -.3)), "head": ((.22, .08), (.16, -.19)), "mouth": ((.2, .1), (.12, -.12)),
    "back": ((-.08, .14), (-.1, .28)), "wave": ((.16, -.1), (.2, -.28))}


def person(cv, x, gy, h, shirt, face=1, front="down", back="down", role=None, lift=0.0):
    """A standing figure, feet at (x, gy - lift), height h, facing right (face=1) or left, arms in ARMS
    poses (the far arm first, so the near one is drawn over the body); returns its front hand."""
    gy = gy - lift
    colour, lw = (NAVY if shirt == POLICE else shirt), max(2, h / 11)
    r, bw = .12 * h, .15 * h
    hy, neck, hip = gy - h + r, gy - h + 2 * r, gy - .45 * h
    sy = neck + .07 * h  # the shoulders

    def arm(pose):
        (ex, ey), (hx, hy_) = ARMS[pose]
        hand = (x + face * hx * h, sy + hy_ * h)
        cv.line([(x, sy), (x + face * ex * h, sy + ey * h), hand], colour, lw)
        return hand

    with cv.figure("police" if shirt == POLICE else "person", role, shirt):
        arm(back)
        for side in (-1, 1):
            cv.line([(x + side * .5 * bw, hip), (x + side * .6 * bw, gy)], (40, 40, 60), lw)
        cv.rect(x - bw, neck, x + bw, hip, colour)
        cv.ellipse(x, hy, r, r, cv.rng.choice(SKIN))
        eye = (x + face * .5 * r, hy - .3 * r)  # shows which way the figure faces
        cv.d.ellipse([eye[0] - 1, eye[1] - 1, eye[0] + 1, eye[1] + 1], fill=INK)
        if shirt == POLICE:  # a cap with a peak
            cv.rect(x - r, hy - 1.25 * r, x + r, hy - .45 * r, (15, 15, 15))
            cv.rect(x, hy - .7 * r, x + face * 1.6 * r, hy - .45 * r, (15, 15, 15))
        return arm(front)


def lying(cv, x, gy, h, shirt, face=1, role=None, bed=False):
    """A figure lying on its back, head at x, body along the ground (or a bed) towards `face`."""
    r, t, lw = .12 * h, .11 * h, max(2, h / 11)
    cy = gy - t - (.22 * h if bed else 0)
    with cv.figure("person", role, shirt):
        for dy in (-.5 * t, .5 * t):
            cv.line([(x + face * (2 * r + .42 * h), cy + dy), (x + face * .98 * h, cy + dy)], (40, 40, 60), lw)
        cv.rect(x + face * 1.8 * r, cy - t, x + face * (2 * r + .45 * h), cy + t, shirt)
        cv.ellipse(x + face * r, cy, r, r, cv.rng.choice(SKIN))


def gun(cv, hx, hy, face, h, role=None):
    """A gun gripped at (hx, hy), pointing towards `face`; returns its muzzle."""
    t = max(3, .07 * h)
    with cv.figure("gun", role):
        cv.rect(hx - face * .04 * h, hy - t, hx + face * .3 * h, hy, (55, 55, 55))
        cv.rect(hx - face * .04 * h, hy, hx + face * .03 * h, hy + .1 * h, (55, 55, 55))
    return hx + face * .3 * h, hy - t / 2


def sign(cv, hx, hy, h, role=None):
    """A placard on a stick held at (hx, hy) (or standing on the ground)."""
    bw, bh, top = .18 * h, .2 * h, hy - .25 * h
    with cv.figure("sign", role):
        cv.line([(hx, hy + .05 * h), (hx, top)], (120, 80, 40), max(2, h / 16))
        cv.rect(hx - bw, top - bh, hx + bw, top, cv.rng.choice(((250, 250, 240), (250, 240, 150), (200, 230, 250))))
        slogan = cv.rng.choice(((200, 0, 0), INK))
        cv.line([(hx - .7 * bw, top - .5 * bh), (hx + .7 * bw, top - .5 * bh)], slogan, max(2, h / 20))


HELD = {"phone": (.1, .17, INK, (190, 220, 240)), "bill": (.24, .12, (60, 160, 70), (30, 110, 40)),
        "book": (.24, .18, (150, 60, 40), (245, 245, 235)), "food": (.12, .12, (250, 150, 30), None)}


def held(cv, hx, hy, h, kind, role=None):
    """A small object centred at a hand (or on a table top): a phone, bill or book (width, height in h,
    colour, inner panel) or food."""
    w, ht, fill, inner = HELD[kind]
    with cv.figure(kind, role):
        if kind == "food":
            cv.ellipse(hx, hy, w * h / 2, w * h / 2, fill)
        else:
            cv.rect(hx - w * h / 2, hy - ht * h / 2, hx + w * h / 2, hy + ht * h / 2, fill)
            cv.rect(hx - w * h / 4, hy - ht * h / 4, hx + w * h / 4, hy + ht * h / 4, inner, outline=None)


def table(cv, x, gy, h, thing=None):
    """A table (scenery, no box) with an optional phone / bill / book / food on top (boxed, role 'item')."""
    top = gy - .35 * h
    cv.d.rectangle([x - .25 * h, top, x + .25 * h, top + .05 * h], fill=(140, 95, 50), outline=INK)
    for dx in (-.2, .2):
        cv.d.line([(x + dx * h, top), (x + dx * h, gy)], fill=(110, 75, 40), width=max(2, round(h / 16)))
    if thing:
        held(cv, x + cv.rng.uniform(-.1, .1) * h, top - .07 * h, h, thing, role="item")


def cage(cv, x1, y1, x2, y2, h, role=None):
    """Bars from (x1, y1) to (x2, y2): two rails and an upright about every .12 h."""
    lw, n = max(2, h / 14), max(3, round((x2 - x1) / (.12 * h)))
    with cv.figure("cage", role):
        for y in (y1, y2):
            cv.line([(x1, y), (x2, y)], (70, 70, 70), lw)
        for k in range(n + 1):
            x = x1 + k * (x2 - x1) / n
            cv.line([(x, y1), (x, y2)], (70, 70, 70), lw)


def vehicle(cv, x1, gy, h, face, length, seats=(), role=None):
    """A car (or a bus when long) from x1 with one window per seat; `seats` (shirt, role) sit in the
    windows, the first one in the front window (towards `face`)."""
    L, x2 = length * h, x1 + length * h
    n = 4 if length > 1.4 else 2
    with cv.figure("bus" if n == 4 else "car", role):
        body = cv.rng.choice(((200, 60, 60), (60, 90, 170), (230, 200, 60), (90, 150, 90), (230, 230, 230)))
        cv.rect(x1, gy - .45 * h, x2, gy - .12 * h, body)
        back, front = (.05, .05) if n == 4 else (.1, .3)  # a car's bonnet is in front: the driver's side shows
        c1, c2 = (x1 + back * L, x2 - front * L) if face == 1 else (x1 + front * L, x2 - back * L)
        cv.rect(c1, gy - .78 * h, c2, gy - .45 * h, body)
        lamp = x2 - .06 * h if face == 1 else x1
        cv.rect(lamp, gy - .4 * h, lamp + .06 * h, gy - .32 * h, (255, 230, 80))
        for wx in (x1 + .22 * L, x2 - .22 * L):
            cv.ellipse(wx, gy - .1 * h, .1 * h, .1 * h, (20, 20, 20))
        ww = (c2 - c1) / n
        wins = [(c1 + k * ww + .08 * ww, c1 + (k + 1) * ww - .08 * ww) for k in range(n)]
        wins = wins[::-1] if face == 1 else wins  # front window first
        for a, b in wins:
            cv.rect(a, gy - .74 * h, b, gy - .5 * h, (180, 215, 240))
    for (a, b), (shirt, r) in zip(wins, seats):  # a head and shoulders in the window
        cx = (a + b) / 2
        with cv.figure("person", r, shirt):
            colour = NAVY if shirt == POLICE else shirt
            cv.rect(max(a, cx - .12 * h), gy - .6 * h, min(b, cx + .12 * h), gy - .5 * h, colour)
            cv.ellipse(cx, gy - .65 * h, .08 * h, .08 * h, cv.rng.choice(SKIN))


def backdrop(cv):
    """0-3 background things (scenery, no boxes): buildings, trees, the sun, clouds."""
    rng, d = cv.rng, cv.d
    for kind in rng.sample(("building", "tree", "sun", "cloud", "building", "tree"), rng.randint(0, 3)):
        x = rng.uniform(0, cv.W)
        if kind == "building":
            w, top = rng.uniform(.15, .35) * cv.W, rng.uniform(.1, .4) * cv.H
            wall = rng.choice(((170, 150, 130), (150, 160, 175), (200, 190, 170)))
            d.rectangle([x, top, x + w, cv.horizon], fill=wall)
            for wy in range(int(top) + 4, int(cv.horizon) - 6, 10):
                for wx in range(int(x) + 3, int(x + w) - 5, 9):
                    d.rectangle([wx, wy, wx + 4, wy + 5], fill=(90, 100, 120))
        elif kind == "tree":
            top = rng.uniform(.2, .45) * cv.H
            d.rectangle([x - 2, top, x + 2, cv.horizon], fill=(100, 70, 40))
            d.ellipse([x - 12, top - 12, x + 12, top + 10], fill=(50, 130, 60))
        elif kind == "sun":
            d.ellipse([x - 7, 4, x + 7, 18], fill=(250, 220, 80))
        else:
            y = rng.uniform(.05, .25) * cv.H
            d.ellipse([x - 12, y - 5, x + 12, y + 5], fill=(250, 250, 250))


def fit(cv, units, top=1.0):
    """Pick a ground line, a figure height h and a direction so that `units` figure heights fit across
    (and `top` heights up); returns (gy, h, face, X) with X(u) the x of offset u (in h) from the start."""
    rng = cv.rng
    gy = rng.uniform(max(.8, cv.horizon / cv.H + .12), .97) * cv.H
    h = min(rng.uniform(.5, .75) * cv.H, .92 * cv.W / units, .93 * gy / top)
    x0 = rng.uniform(.04 * cv.W, max(.04 * cv.W, .96 * cv.W - units * h))
    face = rng.choice((1, -1))
    cv.span = (x0, x0 + units * h)  # clutter goes outside
    return gy, h, face, (lambda u: x0 + u * h if face == 1 else x0 + (units - u) * h)


def clutter(cv, no_gun=False):
    """A distractor left and right of the composition where there is room: a crate, a ball, a bystander
    or a gun on the ground (not next to an Attack or a death, where it would be an argument)."""
    rng = cv.rng
    gy = rng.uniform(max(.8, cv.horizon / cv.H + .1), .97) * cv.H
    for lo, hi in ((0, cv.span[0]), (cv.span[1], cv.W)):
        h = rng.uniform(.35, .6) * cv.H
        if hi - lo < .45 * h or rng.random() < .3:
            continue
        x = rng.uniform(lo + .22 * h, hi - .22 * h)
        kind = rng.choice(("crate", "ball", "bystander", "bystander") + (() if no_gun else ("gun",)))
        if kind == "crate":
            with cv.figure(kind):
                cv.rect(x - .15 * h, gy - .3 * h, x + .15 * h, gy, (170, 120, 60))
        elif kind == "ball":
            with cv.figure(kind):
                cv.ellipse(x, gy - .08 * h, .08 * h, .08 * h, rng.choice(((230, 60, 60), (60, 60, 230))))
        elif kind == "gun":
            gun(cv, x - .1 * h, gy - .08 * h, rng.choice((1, -1)), h)
        else:
            person(cv, x, gy, h, cv.shirt(.2), rng.choice((1, -1)), rng.choice(("down", "back")))


# ----------------------------------------------------------------------------- one composition per event type
# Each draws one event from `figs` {image role: [shirt, ...]}, the people the text names in that role (the
# others are drawn at random), and records every figure with its M2E2 image role.
def _pick(cv, figs, role):
    got = figs.get(role)
    return got[0] if got else cv.shirt()


def attack(cv, figs):
    """A gun held out at one or two people (who may raise their hands)."""
    rng = cv.rng
    targets = list(figs.get("Target") or [cv.shirt() for _ in range(rng.choice((1, 1, 2)))])[:2]
    gap = rng.uniform(.1, .45)
    gy, h, f, X = fit(cv, 1.3 + gap + .45 * (len(targets) - 1))
    hx, hy = person(cv, X(.22), gy, h, _pick(cv, figs, "Attacker"), f, "forward", role="Attacker")
    mx, my = gun(cv, hx, hy, f, h, role="Instrument")
    if rng.random() < .4:  # a muzzle flash
        cv.d.polygon([(mx, my - 4), (mx + f * 7, my), (mx, my + 4)], fill=(255, 200, 0))
    for i, s in enumerate(targets):
        arms = rng.choice(("up", "down", "back"))
        person(cv, X(1.05 + gap + .45 * i), gy, h * rng.uniform(.9, 1.05), s, rng.choice((-f, -f, f)), arms,
               "up" if arms == "up" else "down", role="Target")


def demonstrate(cv, figs):
    """Two to four people holding signs up, maybe police facing them."""
    rng = cv.rng
    ents = list(figs.get("Entity") or [cv.shirt() for _ in range(rng.randint(2, 4))])[:4]
    if len(ents) < 2:
        ents.append(cv.shirt())
    police = list(figs.get("Police") or [POLICE] * rng.choice((0, 0, 1, 2)))[:2]
    n = len(ents)
    gy, h, f, X = fit(cv, .45 * n + (.2 + .45 * len(police) if police else 0), top=1.5)
    for i, s in enumerate(ents):
        hx, hy = person(cv, X(.22 + .45 * i), gy, h * rng.uniform(.88, 1.04), s, rng.choice((1, -1)), "up",
                        rng.choice(("down", "back")), role="Entity")
        sign(cv, hx, hy, h, role="Instrument")
    for j, s in enumerate(police):
        person(cv, X(.45 * n + .42 + .45 * j), gy, h, s, -f, rng.choice(("down", "back")), role="Police")


def meet(cv, figs):
    """Two people face to face, close (or shaking hands), maybe a third joining."""
    rng = cv.rng
    ents = list(figs.get("Entity") or [])[:3]
    while len(ents) < 2:
        ents.append(cv.shirt())
    shake = rng.random() < .5
    d = .64 if shake else rng.uniform(.42, .55)
    gy, h, f, X = fit(cv, .44 + d + .45 * (len(ents) - 2))
    person(cv, X(.22), gy, h, ents[0], f, "reach" if shake else "down", role="Entity")
    person(cv, X(.22 + d), gy, h * rng.uniform(.95, 1.0), ents[1], -f, "reach" if shake else "down", role="Entity")
    if len(ents) == 3:
        person(cv, X(.67 + d), gy, h * rng.uniform(.9, 1.0), ents[2], -f, "down", role="Entity")


def phone(cv, figs):
    """A phone at the head."""
    gy, h, f, X = fit(cv, .7)
    hx, hy = person(cv, X(.3), gy, h, _pick(cv, figs, "Entity"), f, "head", cv.rng.choice(("down", "back")),
                    role="Entity")
    held(cv, hx + f * .03 * h, hy, h, "phone", role="Instrument")


def arrest(cv, figs):
    """Police leading someone away by the arm (maybe in handcuffs), or a person behind bars."""
    rng = cv.rng
    who, agents = _pick(cv, figs, "Person"), list(figs.get("Agent") or [POLICE])[:2]
    if rng.random() < .6:
        gy, h, f, X = fit(cv, .95)
        person(cv, X(.22), gy, h, agents[0], f, "reach", role="Agent")
        hx, hy = person(cv, X(.6), gy, h * rng.uniform(.9, 1.0), who, f, "back", "back", role="Person")
        if rng.random() < .5:
            with cv.figure("handcuffs", "Instrument"):
                cv.ellipse(hx, hy, .06 * h, .04 * h, None, (60, 60, 60))
    else:
        agents = agents if "Agent" in figs or rng.random() < .5 else []
        gy, h, f, X = fit(cv, .75 + .45 * len(agents))
        person(cv, X(.35), gy, h * .9, who, rng.choice((1, -1)), rng.choice(("down", "up")), role="Person")
        cage(cv, min(X(.05), X(.65)), gy - 1.02 * h, max(X(.05), X(.65)), gy - 1, h, role="Instrument")
        for j, s in enumerate(agents):
            person(cv, X(.95 + .45 * j), gy, h, s, -f, "down", role="Agent")


def die(cv, figs):
    """A person lying on the ground, maybe in blood, maybe a gun beside them."""
    rng = cv.rng
    weapon = "Instrument" in figs or rng.random() < .35
    gy, h, f, X = fit(cv, 1.05 + (.4 if weapon else 0), top=.5)
    if rng.random() < .6:
        cv.d.ellipse([min(X(.3), X(.8)), gy - .1 * h, max(X(.3), X(.8)), gy + .02 * h], fill=(140, 10, 10))
    lying(cv, X(.03), gy, h, _pick(cv, figs, "Victim"), f, role="Victim")
    if weapon:
        gun(cv, X(1.12), gy - .08 * h, rng.choice((1, -1)), h, role="Instrument")


def transport(cv, figs):
    """People in the windows of a car or bus, the driver (Agent, if any) in front."""
    rng = cv.rng
    arts = list(figs.get("Artifact") or [cv.shirt() for _ in range(rng.randint(1, 2))])[:3]
    seats = [(s, "Agent") for s in list(figs.get("Agent") or [])[:1]] + [(s, "Artifact") for s in arts]
    length = 1.7 if len(seats) > 2 or rng.random() < .3 else 1.15
    gy, h, f, X = fit(cv, length + .04, top=.8)
    vehicle(cv, min(X(.02), X(length + .02)), gy, h, f, length, seats, role="Vehicle")


def transfer(cv, figs):
    """A bill held out to a reaching hand."""
    rng = cv.rng
    gy, h, f, X = fit(cv, 1.1)
    hx, hy = person(cv, X(.22), gy, h, _pick(cv, figs, "Giver"), f, "forward", role="Giver")
    person(cv, X(.86), gy, h * rng.uniform(.97, 1.0), _pick(cv, figs, "Recipient"), -f, "reach", role="Recipient")
    held(cv, hx + f * .1 * h, hy, h, "bill", role="Money")


COMPOSE = {"Conflict:Attack": attack, "Conflict:Demonstrate": demonstrate, "Contact:Meet": meet,
           "Contact:Phone-Write": phone, "Justice:Arrest-Jail": arrest, "Life:Die": die,
           "Movement:Transport": transport, "Transaction:Transfer-Money": transfer}


# ----------------------------------------------------------------------------- event-free scenes
def standing(cv, shirts=()):
    """People standing apart (never touching, never gun in hand) and maybe one loose object: a gun on the
    ground, a phone / bill / book on a table, a sign on its own, an empty car or cage, or a pair back to back."""
    rng = cv.rng
    shirts = list(shirts) or [cv.shirt() for _ in range(rng.randint(1, 3))]
    thing = rng.choice(("none", "gun", "table", "sign", "car", "cage", "backs"))
    backs = thing == "backs" and len(shirts) >= 2
    room = {"gun": .6, "table": .6, "sign": .6, "cage": .6, "car": 1.3}.get(thing, 0)  # for the object, in h
    units = .5 + .95 * (len(shirts) - 1) - (.5 if backs else 0) + room
    gy, h, f, X = fit(cv, units, top=1.4 if thing == "sign" else 1.0)
    if thing == "gun":
        gun(cv, X(.1), gy - .08 * h, rng.choice((1, -1)), h, role="item")
    elif thing == "table":
        table(cv, X(.3), gy, h, rng.choice(("phone", "bill", "book", None)))
    elif thing == "sign":
        sign(cv, X(.3), gy - .08 * h, h, role="item")
    elif thing == "cage":
        cage(cv, min(X(.02), X(.55)), gy - .9 * h, max(X(.02), X(.55)), gy - 1, h, role="item")
    elif thing == "car":
        vehicle(cv, min(X(.02), X(1.17)), gy, h, f, 1.15, role="item")
    u = .25 + room
    for i, s in enumerate(shirts):
        face = (-f if i == 0 else f) if backs else rng.choice((1, -1))
        person(cv, X(u), gy, h * rng.uniform(.9, 1.02), s, face, rng.choice(("down", "back")), role="agent")
        u += .5 if backs and i == 0 else .95


POSES = {"jumping": "up", "eating": "mouth", "reading": "reach", "waving": "wave"}  # the front arm


def activity(cv, verb):
    """One person doing something that is no M2E2 event: jumping, eating, reading, waving or sleeping."""
    s = cv.shirt()
    if verb == "sleeping":
        gy, h, f, X = fit(cv, 1.05, top=.6)
        x1, x2 = min(X(0), X(1.05)), max(X(0), X(1.05))
        cv.d.rectangle([x1, gy - .28 * h, x2, gy - .12 * h], fill=(240, 240, 240), outline=INK)
        for u in (0.02, 1.03):
            cv.d.line([(X(u), gy - .28 * h), (X(u), gy)], fill=(110, 75, 40), width=3)
        lying(cv, X(.03), gy, h, s, f, role="agent", bed=True)
        return
    gy, h, f, X = fit(cv, .95, top=1.2)
    hx, hy = person(cv, X(.3), gy, h, s, f, POSES[verb], "up" if verb == "jumping" else "down", role="agent",
                    lift=.15 * h if verb == "jumping" else 0)
    if verb in ("eating", "reading"):
        held(cv, hx, hy, h, "food" if verb == "eating" else "book", role="item")
        if verb == "eating":
            table(cv, X(.75), gy, h, "food")


def draw_scene(rng, event_type=None, figs=None, verb=None, shirts=()) -> Canvas:
    """A whole picture: backdrop, one event (or an activity, or an event-free scene), clutter."""
    cv = Canvas(rng)
    cv.used.update(s for ss in (figs or {}).values() for s in ss if s != POLICE)
    cv.used.update(shirts)
    backdrop(cv)
    if event_type:
        COMPOSE[event_type](cv, figs or {})
    elif verb in (*POSES, "sleeping"):
        activity(cv, verb)
    else:
        standing(cv, shirts)
    clutter(cv, no_gun=event_type in ("Conflict:Attack", "Life:Die"))
    return cv


# ============================================================================= text
@dataclass
class Fill:
    """A filler phrase: its words, the (start, end, entity type) of its entity heads (relative), and the
    shirts of the people it names (for pictures of the same story)."""
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
    """One event with its participants: role -> fills, shared by every sentence and picture that shows it."""
    event_type: str
    fills: dict = field(default_factory=dict)

    def names(self) -> set:
        return {NAME_OF[s] for fs in self.fills.values() for f in fs for s in f.shirts if s in NAME_OF}

    def figs(self) -> dict:
        """Image role -> shirts of the people the text names (Phone-Write: only the caller holds a phone)."""
        out = {}
        for role, fs in self.fills.items():
            if role in IMAGE_ROLES[self.event_type] and role not in ("Instrument", "Vehicle"):
                fs = fs[:1] if self.event_type == "Contact:Phone-Write" else fs
                shirts = [s for f in fs for s in f.shirts]
                if shirts:
                    out[role] = shirts
        return out


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
        """Render a template; fill_of(slot, k) gives the k-th filler of a slot. Capitalised slots are
        arguments; with an event type the event is recorded. Returns (slot counts, [(role, span)])."""
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
                args += [(slot, sp) for sp in spans] if slot[0].isupper() else []
            else:
                self.lit(tok)
        if event_type:
            self.events.append([event_type, trigger, args])
        return seen, args


def clause(b: Builder, rng, story: Story):
    """One clause that tells `story` (a template + modifiers); new participants join the story, so later
    sentences and pictures of it show the same people."""
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
    """A JMEE-style sentence record (no id): one clause per story (0-2), or one other-ACE event, or a filler,
    with an optional distractor prefix / suffix. The events come in the order of `stories`."""
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
            if st.event_type == "Life:Die" and prev and not prev[0].plural and "Victim" not in st.fills:
                st.fills["Victim"] = prev[:1]  # 'X shot Y , and Y died'
        clause(b, rng, st)
    if other:
        t, tmpl, kinds = other
        b.template(rng, tmpl, lambda role, k: make_fill(rng, kinds[role]), t if ace else None)
    elif not stories:
        b.template(rng, rng.choice(FILLERS), distractor)
    if rng.random() < .2:
        b.template(rng, rng.choice(SUFFIXES), distractor)
    b.lit(".")
    w = b.words
    w[0] = w[0][:1].upper() + w[0][1:]
    text = lambda s, e: " ".join(w[s:e])
    events = []
    for t, (ts, te), args in b.events:
        arguments = [{"role": r, "start": s, "end": e, "text": text(s, e)} for r, (s, e) in args]
        if time and ace:  # ACE marks times; the reader drops roles that are not M2E2 roles
            arguments.append({"role": "Time-Within", "start": 0, "end": 2, "text": text(0, 2)})
        events.append({"trigger": {"start": ts, "end": te, "text": text(ts, te)}, "event_type": t,
                       "arguments": arguments})
    ents = sorted(set(b.entities) | ({(0, 2, "TIME")} if time else set()))
    return {"words": w, "sentence": " ".join(w), "golden-event-mentions": events, "golden-entity-mentions":
            [{"entity-type": t, "text": text(s, e), "start": s, "end": e} for s, e, t in ents]}


# ============================================================================= the four sources
def _dump(path: Path, obj):
    path.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _boxes(cv, roles) -> dict:
    """Role -> [(box, kind)] of the recorded figures in drawing order, degenerate slivers dropped."""
    out = {}
    for role, box, _, kind in cv.figs:
        if role in roles and box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
            out.setdefault(role, []).append((box, kind))
    return out


def write_ace(rng, path: Path, split: str, n: int, held_out: set):
    """n JMEE sentences, drawn as 60% M2E2 events (15% of them two), 12% only an ACE type M2E2 lacks, the rest
    none; a sentence equal to an evaluation sentence (mostly a short filler) is drawn again."""
    recs = []
    while len(recs) < n:
        u = rng.random()
        if u < .6:
            pair = rng.random() < .15
            types = ["Conflict:Attack", "Life:Die"] if pair and rng.random() < .3 else rng.sample(TYPES, 1 + pair)
            rec = sentence(rng, [Story(t) for t in types], ace=True)
        else:
            rec = sentence(rng, other=rng.choice(OTHER_ACE) if u < .72 else None, ace=True)
        if tuple(rec["words"]) not in held_out:  # no evaluation sentence in training
            recs.append({"sentence_id": f"toyace-{split}-{len(recs):05d}", **rec})
    _dump(path, recs)


SWIG_VERBS = {  # verb -> (M2E2 type, {imSitu role: M2E2 image role}); written out as ace_sr_mapping.txt
    "shooting": ("Conflict:Attack", {"agent": "Attacker", "victim": "Target", "firearm": "Instrument"}),
    "aiming": ("Conflict:Attack", {"agent": "Attacker", "target": "Target", "weapon": "Instrument"}),
    "protesting": ("Conflict:Demonstrate", {"agent": "Entity", "sign": "Instrument", "opponent": "Police"}),
    "marching": ("Conflict:Demonstrate", {"marchers": "Entity", "item": "Instrument", "observer": "Police"}),
    "talking": ("Contact:Meet", {"agent": "Entity", "listener": "Entity"}),
    "shaking": ("Contact:Meet", {"agent": "Entity", "coagent": "Entity"}),
    "phoning": ("Contact:Phone-Write", {"agent": "Entity", "tool": "Instrument"}),
    "calling": ("Contact:Phone-Write", {"agent": "Entity", "tool": "Instrument"}),
    "arresting": ("Justice:Arrest-Jail", {"agent": "Agent", "suspect": "Person", "tool": "Instrument"}),
    "imprisoning": ("Justice:Arrest-Jail", {"agent": "Agent", "prisoner": "Person", "place": "Instrument"}),
    "dying": ("Life:Die", {"victim": "Victim", "cause": "Instrument"}),
    "collapsing": ("Life:Die", {"agent": "Victim", "tool": "Instrument"}),
    "driving": ("Movement:Transport", {"agent": "Agent", "passenger": "Artifact", "vehicle": "Vehicle"}),
    "riding": ("Movement:Transport", {"rider": "Artifact", "vehicle": "Vehicle"}),
    "paying": ("Transaction:Transfer-Money", {"agent": "Giver", "payee": "Recipient", "money": "Money"}),
    "buying": ("Transaction:Transfer-Money", {"agent": "Giver", "seller": "Recipient", "money": "Money"}),
}
NO_EVENT_VERBS = ("jumping", "eating", "reading", "sleeping", "waving", "standing")  # not in the mapping
NOUNS = {"person": ("man", "woman", "person"), "police": ("policeman",)}  # imSitu nouns of a figure kind


def swig_record(rng, name: str, img_dir: Path) -> dict:
    """One SWiG-style image: 75% an event of a mapped verb, else an unmapped everyday verb."""
    if rng.random() < .75:
        t = rng.choice(TYPES)
        driver = t == "Movement:Transport" and rng.random() < .5
        cv = draw_scene(rng, t, {"Agent": [rng.choice(list(CAST.values()) + list(ANON))]} if driver else {})
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
    for r, m in roles.items():  # imSitu roles mapped to one M2E2 role share its boxes in order; the last takes the rest
        same = [x for x in roles if roles[x] == m]
        k, got = same.index(r), found.get(m, [])
        mine = got[k:k + 1] if k < len(same) - 1 else got[k:]
        boxes = [b for b, _ in mine]
        bb[r] = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                  max(b[3] for b in boxes)] if mine else [-1, -1, -1, -1])  # one box around them all
        kind = mine[0][1] if mine else ""
        nouns[r] = rng.choice(NOUNS.get(kind, (kind,)))
    cv.im.save(img_dir / name, format="PNG")
    return {"verb": verb, "frames": [dict(nouns) for _ in range(3)], "bb": bb, "height": cv.H, "width": cv.W}


KB = {("Anna", "Boris"): "/per/per/couple", ("Goran", "Hana"): "/per/per/couple", ("Chen", "Dina"): "/per/per/siblings",
      ("Ivan", "Jana"): "/per/per/siblings", ("Emil", "Fatima"): "/per/per/peer", ("Karim", "Lena"): "/per/per/peer",
      ("Anna", "Chen"): "/per/per/peer"}
MEMBER = {"Boris": "Union", "Dina": "Council", "Emil": "Northbank", "Hana": "Union", "Karim": "Council", "Lena": "Acme"}
HOME = {"Anna": "Karsk", "Chen": "Velma", "Fatima": "Oston", "Ivan": "Lorn", "Jana": "Prima", "Goran": "Tarvik"}
REL_TEXT = {"/per/per/couple": ("{H} and spouse {T}", "{H} and {T} , a married couple ,"),
            "/per/per/siblings": ("{H} and sibling {T}", "{H} and {T} , who are siblings ,"),
            "/per/per/peer": ("{H} and colleague {T}", "{H} , who works with {T} ,"),
            "/per/org/member_of": ("{H} , a member of the {T} ,", "{H} of the {T}"),
            "/per/loc/place_of_residence": ("{H} , who lives in {T} ,", "{H} of {T}"),
            "None": ("{H} and {T}", "{H} , along with {T} ,")}
PREDICATES = ("posed for a photo", "spoke to reporters", "waited outside the station", "greeted supporters",
              "attended the ceremony", "were seen at the market")


def mnre_example(rng, name: str, img_dir: Path) -> list[dict]:
    """One sentence + picture and its MNRE lines: the relation the sentence states (or None), and for the
    names it mentions, '/per/misc/present_in' to their figure (colour) or 'None' to another figure."""
    u = rng.random()
    if u < .45:
        (h, t), label = rng.choice(sorted(KB.items()))
    elif u < .75:
        label, facts = ("/per/org/member_of", MEMBER) if u < .6 else ("/per/loc/place_of_residence", HOME)
        h = rng.choice(sorted(facts))
        t = facts[h]
    else:
        h, t = rng.sample(sorted(CAST), 2)
        while (h, t) in KB or (t, h) in KB:
            h, t = rng.sample(sorted(CAST), 2)
        label = "None"
    if rng.random() < .5 and label.startswith("/per/per"):
        h, t = t, h
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
        roles = [r for r in IMAGE_ROLES[t_] if r not in ("Instrument", "Vehicle", "Money", "Place", "Police")]
        figs = {}
        for s in shirts:
            figs.setdefault(rng.choice(roles), []).append(s)
        cv = draw_scene(rng, t_, figs)
    else:
        cv = draw_scene(rng, shirts=shirts + [rng.choice(ANON) for _ in range(rng.randint(0, 1))])
    cv.im.save(img_dir / name, format="PNG")
    people = [(box, shirt) for _, box, shirt, kind in cv.figs if kind in ("person", "police")
              and box[2] - box[0] >= 2 and box[3] - box[1] >= 2]
    words = b.words
    ent = lambda span: {"name": " ".join(words[span[0]:span[1]]), "pos": list(span)}
    line = lambda span, tail, label: {"token": words, "h": ent(span), "t": tail, "img_id": name, "relation": label}
    lines = [line(spans["H"], ent(spans["T"]), label)]
    for span in spans.values():
        n = words[span[0]]
        if n not in CAST:
            continue
        mine = [box for box, s in people if s == CAST[n]]
        other = [box for box, s in people if s != CAST[n]]
        if mine:
            lines.append(line(span, {"name": "person", "bbox": list(mine[0])}, "/per/misc/present_in"))
        if other and (not mine or rng.random() < .4):
            lines.append(line(span, {"name": "person", "bbox": list(rng.choice(other))}, "None"))
    return lines


def m2e2_doc(rng, did: str, img_dir: Path):
    """One evaluation document: 0-2 stories, each told in 1-2 sentences (one may carry a second, text-only
    event) and shown in a linked image with probability .55; with probability .15 a decoy image of the same
    type with other named people; event-free filler sentences (mostly naming the story's people) and
    pictures (image-only events of other types 25%). Returns ([(sentence record, [linked? per event])],
    {image id: (image record, linked?)}, [(sentence id, image id, type)])."""
    stories = [Story(t) for t in rng.sample(TYPES, rng.choices((0, 1, 2), (.12, .55, .33))[0])]
    mentions = [[st] for st in stories for _ in range(1 + (rng.random() < .2))]
    if mentions and rng.random() < .15:  # a second, text-only event in one sentence
        mentions[0].append(Story(rng.choice([t for t in TYPES if t not in {s.event_type for s in stories}])))
    rng.shuffle(mentions)
    recs = [(sentence(rng, m), m) for m in mentions]
    names = sorted({n for st in stories for n in st.names()}) or rng.sample(sorted(CAST), 2)
    n_sent = max(rng.randint(8, 12), len(recs) + 5)
    while len(recs) < n_sent:
        other = rng.choice(OTHER_ACE) if rng.random() < .15 else None  # an ACE event M2E2 does not annotate
        recs.append((sentence(rng, other=other, names=names), []))
    rng.shuffle(recs)
    plans = []  # (event type, figs, linked story): the stories' pictures, decoys, then other pictures
    for st in stories:
        if rng.random() < .55:
            plans.append((st.event_type, st.figs(), st))
        if st.names() and rng.random() < .15:  # a decoy: every named participant replaced by another cast member
            free = [c for n, c in CAST.items() if n not in st.names()]
            rng.shuffle(free)
            plans.append((st.event_type, {r: [free.pop() if s in NAME_OF else s for s in ss]
                                          for r, ss in st.figs().items()}, None))
    others = [t for t in TYPES if t not in {st.event_type for st in stories}]  # image-only events
    n_img = rng.randint(1, 3)
    while len(plans) < n_img:
        plans.append((rng.choice(others), {}, None) if rng.random() < .25 else (None, {}, None))
    rng.shuffle(plans)
    images, links = {}, []
    for k, (t, figs, st) in enumerate(plans):
        iid = f"{did}_{k}"
        cv = draw_scene(rng, t, figs, shirts=() if t else [CAST[n] for n in names if rng.random() < .5])
        cv.im.save(img_dir / f"{iid}.png", format="PNG")
        if t:
            found = _boxes(cv, IMAGE_ROLES[t])
            roles = {r: [["1", *b] for b, _ in found[r]] for r in IMAGE_ROLES[t] if r in found}
            images[iid] = ({"event_type": t, "role": roles}, st is not None)
        if st is not None:
            links += [(f"{did}_{j}", iid, t) for j, (_, m) in enumerate(recs) if any(x is st for x in m)]
    sents = [({"sentence_id": f"{did}_{j}", **rec, "image": [f"{did}_{k}.png" for k in range(len(plans))]},
              [any(x[2] is st for x in plans) for st in m]) for j, (rec, m) in enumerate(recs)]
    return sents, images, links


def write_m2e2(rng, d: Path, split: str, n_docs: int) -> set:
    """The five M2E2 files + images of one split; returns the set of its sentences (word tuples)."""
    (d / "images").mkdir(parents=True, exist_ok=True)
    text_only, text_mm, img_only, img_mm, coref = [], [], {}, {}, []
    for k in range(n_docs):
        sents, images, links = m2e2_doc(rng, f"toy-{split}-{k:03d}", d / "images")
        for rec, linked in sents:  # a sentence with linked and unlinked events is in both files (as in M2E2)
            events = rec["golden-event-mentions"]
            mm = [e for e, x in zip(events, linked) if x]
            if mm:
                text_mm.append({**rec, "golden-event-mentions": mm})
            if len(mm) < len(events) or not events:
                text_only.append({**rec, "golden-event-mentions": [e for e, x in zip(events, linked) if not x]})
        for iid, (rec, linked) in images.items():
            (img_mm if linked else img_only)[iid] = rec
        coref += [f"{s}\t{i}.png\t{t}\n" for s, i, t in links]
    for name, obj in (("text_only_event", text_only), ("text_multimedia_event", text_mm),
                      ("image_only_event", img_only), ("image_multimedia_event", img_mm)):
        _dump(d / f"{name}.json", obj)
    (d / "crossmedia_coref.txt").write_text("".join(coref), encoding="utf-8")
    return {tuple(r["words"]) for r in text_only + text_mm}


def generate(out_dir, seed: int = 0, **sizes) -> Path:
    """Write the toy world under out_dir (layout: README); the same seed and sizes give the same bytes."""
    sz, out = Sizes(**sizes), Path(out_dir)
    size = lambda source, split: getattr(sz, f"{source}_{split}")
    stream = lambda name: random.Random(f"toy/{seed}/{name}")  # one independent stream per source and split
    held_out = set()  # the evaluation sentences, which no training file may contain
    for split in ("dev", "test"):
        held_out |= write_m2e2(stream(f"m2e2/{split}"), out / "m2e2" / split, split, size("m2e2", split))
    for sub in ("ace", "swig/images", "mnre/images"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / "swig" / "ace_sr_mapping.txt").write_text("".join(
        f"{v}\t{r}\t{t.replace(':', '||').replace('-', '|')}\t{m}\n" for v, (t, roles) in SWIG_VERBS.items()
        for r, m in roles.items()), encoding="utf-8")
    for split in ("train", "dev", "test"):
        write_ace(stream(f"ace/{split}"), out / "ace" / f"{split}.json", split, size("ace", split), held_out)
        rng, names = stream(f"swig/{split}"), [f"toyswig-{split}-{k:05d}.png" for k in range(size("swig", split))]
        _dump(out / "swig" / f"{split}.json", {n: swig_record(rng, n, out / "swig" / "images") for n in names})
        rng, lines, k = stream(f"mnre/{split}"), [], 0
        while len(lines) < size("mnre", split):  # whole examples: a picture's lines stay together
            lines += mnre_example(rng, f"toymnre-{split}-{k:05d}.png", out / "mnre" / "images")
            k += 1
        (out / "mnre" / f"{split}.txt").write_text("".join(repr(x) + "\n" for x in lines), encoding="utf-8")
    return out


# ============================================================================= reading a world back
def _order(x):  # sentences and images in document order: by doc id, then by their number in it
    return x.doc_id, int(x.id.rsplit("_", 1)[1])


def stats(root) -> str:
    """A markdown table of what a --data DIR holds (read back through data.py's readers)."""
    import warnings
    import data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the readers report what they drop; a table does not need it
        src = data.read_sources(root)
    head = ["source", "split", "items", "with event", "events", "args",
            *(t.split(":")[1].split("-")[0] for t in EVENT_TYPES), "links"]
    rows = []

    def row(source, split, items, extra=""):
        events = [e for x in items for e in x.events]
        per = Counter(e.event_type for e in events)
        rows.append([source, split, f"{len(items)}{extra}", sum(1 for x in items if x.events), len(events),
                     sum(len(e.arguments) for e in events), *(per[t] for t in EVENT_TYPES)])

    for source in ("ace", "swig"):
        for split, xs in getattr(src, source).items():
            row(source, split, xs)
    for split, m in src.m2e2.items():
        row("m2e2 text", split, list(m.sentences.values()), f" ({len({s.doc_id for s in m.sentences.values()})} docs)")
        rows[-1].append(len(m.links))
        row("m2e2 image", split, list(m.images.values()))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r + [""] * (len(head) - len(r))) + " |" for r in rows]
    for split, xs in src.mnre.items():
        labels = Counter(x.relations[0].label for x in xs)
        lines.append(f"\nmnre {split}: {len(xs)} lines, {len({x.image.id for x in xs})} images; " +
                     ", ".join(f"{k.rsplit('/', 1)[-1]} {v}" for k, v in sorted(labels.items())))
    return "\n".join(lines)


def same_type_pairs(m2e2) -> tuple[int, int]:
    """(linked, all) over (sentence, image) pairs of one document whose gold events share a type."""
    links = {(x.sentence_id, x.image_id, x.event_type) for x in m2e2.links}
    pairs = [(s.id, iid, t) for s in m2e2.sentences.values() for iid in s.images
             for t in {e.event_type for e in s.events} & {e.event_type for e in m2e2.images[iid].events}]
    return sum(p in links for p in pairs), len(pairs)


TRIGGER_WORDS = sorted({tuple(m[1:-1].lower().split()): t for t, ts in TEMPLATES.items() for tmpl in ts
                        for m in re.findall(r"\[[^\]]+\]", tmpl)}.items(), key=lambda x: -len(x[0]))
PERSON_WORDS = {w.lower() for w in (*CAST, *ANON_NOUNS, *GROUPS, *(p[-1] for p in POLICE_WORDS),
                                     *(o[-1] for o in ORGS))}
PLACE_WORDS = {p.lower() for p in PLACES}
# Keyword baseline argument rule per type: (nearest person word before the trigger, nearest after, first place after).
RULE = {"Conflict:Attack": ("Attacker", "Target", "Place"), "Conflict:Demonstrate": ("Entity", "Police", "Place"),
        "Contact:Meet": ("Entity", "Entity", "Place"), "Contact:Phone-Write": ("Entity", "Entity", "Place"),
        "Justice:Arrest-Jail": ("Agent", "Person", "Place"), "Life:Die": ("Victim", None, "Place"),
        "Movement:Transport": ("Artifact", None, "Destination"),
        "Transaction:Transfer-Money": ("Giver", "Recipient", None)}


def keyword_events(words) -> list[dict]:
    """Every trigger phrase of the templates found in the sentence (longest first, ambiguous words included),
    with arguments by the nearest-word rule; the prediction-file form of m2e2.md."""
    low, events, taken = [w.lower() for w in words], [], set()
    for phrase, t in TRIGGER_WORDS:
        for i in range(len(low) - len(phrase) + 1):
            here = set(range(i, i + len(phrase)))
            if tuple(low[i:i + len(phrase)]) != phrase or taken & here:
                continue
            taken |= here
            left = [j for j in range(i) if low[j] in PERSON_WORDS][-1:]
            right = [j for j in range(i + len(phrase), len(low)) if low[j] in PERSON_WORDS][:1]
            places = [j for j in range(i + len(phrase), len(low)) if low[j] in PLACE_WORDS][:1]
            args = [{"role": role, "start": js[0], "end": js[0] + 1}
                    for role, js in zip(RULE[t], (left, right, places)) if role and js]
            events.append({"event_type": t, "trigger": {"start": i, "end": i + len(phrase)}, "arguments": args})
    return sorted(events, key=lambda e: e["trigger"]["start"])


def baseline(root, split: str, pred_path) -> int:
    """Keyword baseline on m2e2/<split>: text by keywords; each image of a document gets the type of the
    document's first keyword event (no boxes: nothing it can see) and is linked to the sentences with that
    type. Writes JSON Lines; returns the number of lines."""
    import data
    gold = data.read_m2e2(Path(root) / "m2e2" / split)
    sents = sorted(gold.sentences.values(), key=_order)
    found = {s.id: keyword_events(s.words) for s in sents}
    lines, first = [], {}
    for s in sents:
        lines.append({"sentence_id": s.id, "events": found[s.id]})
        for e in found[s.id]:
            first.setdefault(s.doc_id, e["event_type"])
    for im in sorted(gold.images.values(), key=_order):
        t = first.get(im.doc_id)
        lines.append({"image_id": im.id, "events": [{"event_type": t, "arguments": []}] if t else []})
        lines += [{"sentence_id": s.id, "image_id": im.id, "event_type": t} for s in sents
                  if s.doc_id == im.doc_id and t in {e["event_type"] for e in found[s.id]}]
    Path(pred_path).write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines), encoding="utf-8")
    return len(lines)


ROLE_COLOURS = ((230, 0, 0), (0, 90, 255), (0, 160, 0), (255, 140, 0), (170, 0, 200), (0, 170, 170))


def draw_doc(root, split: str, doc: str, png, pred_path=None, scale: int = 3) -> Path:
    """Draw a document's images side by side (enlarged) with gold or predicted boxes and role labels,
    and its event sentences underneath, so a person can see what the model sees."""
    import data
    gold = data.read_m2e2(Path(root) / "m2e2" / split, images=True)
    sents = sorted((s for s in gold.sentences.values() if s.doc_id == doc), key=_order)
    ims = sorted((i for i in gold.images.values() if i.doc_id == doc), key=_order)
    if not sents and not ims:
        raise ValueError(f"{root}/m2e2/{split}: no document {doc!r}")
    s_events, i_events, links = {s.id: s.events for s in sents}, {i.id: i.events for i in ims}, gold.links
    if pred_path:
        import evaluate
        pred = evaluate.load_predictions(pred_path, gold)
        s_events = {s.id: pred.sentences.get(s.id, ()) for s in sents}
        i_events, links = {i.id: pred.images.get(i.id, ()) for i in ims}, pred.links
    tiles = []
    for im in ims:
        tile = PILImage.open(im.path).convert("RGB")
        tile = tile.resize((tile.width * scale, tile.height * scale), PILImage.NEAREST)
        d = ImageDraw.Draw(tile)
        d.text((3, 2), f"{im.id}: {', '.join(e.event_type for e in i_events[im.id]) or 'no event'}", fill=INK)
        for e in i_events[im.id]:
            for a in e.arguments:
                c = ROLE_COLOURS[IMAGE_ROLES[e.event_type].index(a.role) % len(ROLE_COLOURS)]
                b = [v * scale for v in (a.target.x1, a.target.y1, a.target.x2, a.target.y2)]
                d.rectangle(b, outline=c, width=2)
                d.text((b[0] + 2, b[3] - 12), a.role, fill=c)
        tiles.append(tile)
    text = []
    for s in sents:
        for e in s_events[s.id]:
            args = "; ".join(f"{a.role}={' '.join(s.words[a.target.start:a.target.end])}" for a in e.arguments)
            text += [f"{s.id}: {e.event_type} [{' '.join(s.words[e.trigger.start:e.trigger.end])}] {args}",
                     "    " + " ".join(s.words)]
    text += [f"link {x.sentence_id} - {x.image_id} ({x.event_type})" for x in links if x.image_id in i_events]
    top = max([t.height for t in tiles] + [0])
    width = max([sum(t.width + 8 for t in tiles), 200] + [6 * len(line) + 10 for line in text])
    canvas = PILImage.new("RGB", (width, top + 14 * len(text) + 24), (255, 255, 255))
    x = 4
    for t in tiles:
        canvas.paste(t, (x, 4))
        x += t.width + 8
    d = ImageDraw.Draw(canvas)
    d.text((4, top + 10), f"{split} {doc} ({'predicted' if pred_path else 'gold'})", fill=(0, 0, 160))
    for k, line in enumerate(text):
        d.text((4, top + 26 + 14 * k), line, fill=INK)
    canvas.save(png)
    return Path(png)


def main(argv=None):
    p = argparse.ArgumentParser(description="Generate, describe, draw or run the keyword baseline on the toy world.")
    p.add_argument("--out", help="write the toy world into this directory")
    p.add_argument("--seed", type=int, default=0)
    for f in fields(Sizes):
        p.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default)
    p.add_argument("--stats", metavar="DIR", help="print the statistics table of a data directory")
    p.add_argument("--draw", metavar="DIR", help="draw one document of DIR/m2e2/<split> (with --doc, --png)")
    p.add_argument("--baseline", metavar="DIR", help="keyword baseline on DIR/m2e2/<split>, written to --pred")
    p.add_argument("--split", default="test")
    p.add_argument("--doc", help="document id, e.g. toy-test-003")
    p.add_argument("--pred", help="prediction file (JSON Lines): written by --baseline, drawn by --draw")
    p.add_argument("--png", help="output picture for --draw")
    a = p.parse_args(argv)
    if not (a.out or a.stats or a.baseline or a.draw):
        p.error("nothing to do: give --out, --stats, --draw or --baseline")
    if a.baseline and not a.pred:
        p.error("--baseline needs --pred OUT.jsonl")
    if a.draw and not (a.doc and a.png):
        p.error("--draw needs --doc and --png")
    if a.out:
        import time
        t0 = time.time()
        generate(a.out, a.seed, **{f.name: getattr(a, f.name) for f in fields(Sizes)})
        print(f"wrote the toy world (seed {a.seed}) to {a.out} in {time.time() - t0:.1f}s")
    if a.stats:
        print(stats(a.stats))
    if a.baseline:
        print(f"wrote {baseline(a.baseline, a.split, a.pred)} lines to {a.pred}")
    if a.draw:
        print(f"drew {draw_doc(a.draw, a.split, a.doc, a.png, a.pred)}")


if __name__ == "__main__":
    main()
