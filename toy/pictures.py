"""How the toy world's pictures are drawn: a canvas that records boxes, figures, and scenes.

A picture is a composition of bold figures on a sky/ground backdrop with clutter. An event type
shows only in how figures relate: a gun held out at someone (Attack), signs held up (Demonstrate),
two people face to face (Meet), a phone at the head (Phone-Write), police gripping someone or a
person in a cage (Arrest-Jail), a person lying on the ground (Die), people in a vehicle (Transport),
a bill held out to a reaching hand (Transfer-Money). Event-free scenes reuse the objects (a gun on
the ground, a phone on a table, people back to back, someone asleep or eating), so no single object
gives the type away.

Every figure is drawn inside `with cv.figure(kind, role, shirt)`, which records its tight box:
argument boxes are exact by construction. The twelve named people of the world (CAST) each wear one
shirt colour everywhere; the colours live here because a picture is where they show, and text.py
names them.

Every choice is drawn from the canvas's random stream, in a fixed order: the same stream gives the
same pixels, and changing the order of the draws below changes the generated world.

What this file does not do: write files or records (world.py), know the schema's roles beyond the
names it is given, or read anything back.
"""
from __future__ import annotations

import random
from contextlib import contextmanager

from PIL import Image as PILImage, ImageDraw

# ============================================================================= the palette
CAST = {"Anna": (220, 30, 30), "Boris": (30, 70, 230), "Chen": (30, 160, 50),
        "Dina": (255, 140, 0), "Emil": (140, 40, 190), "Fatima": (245, 225, 0),
        "Goran": (0, 205, 215), "Hana": (255, 110, 200), "Ivan": (115, 65, 20),
        "Jana": (160, 235, 60), "Karim": (250, 250, 250), "Lena": (0, 110, 110)}
ANON = ((130, 130, 130), (85, 85, 85), (195, 185, 160), (165, 165, 185))  # unnamed people
POLICE, NAVY = "police", (20, 30, 90)  # a police shirt is a marker, drawn navy with a cap
INK, SKIN = (25, 25, 25), ((240, 200, 160), (205, 150, 110), (150, 100, 70))
SKIES = ((200, 225, 245), (225, 235, 245), (240, 230, 210), (215, 235, 220))
GROUNDS = ((175, 165, 140), (150, 175, 120), (190, 190, 190), (165, 150, 150))


# ============================================================================= the canvas
class Canvas:
    """A pillow picture on a sky/ground backdrop that remembers its figures as (role, box, shirt,
    kind).

    The draw calls inside `with cv.figure(...)` grow one extent, so a figure's box is the tight box
    of what was drawn for it, in pixels, clipped to the picture: argument boxes are exact by
    construction."""

    def __init__(self, rng: random.Random):
        self.rng, self.W, self.H = rng, rng.randint(96, 160), rng.randint(96, 160)
        self.im = PILImage.new("RGB", (self.W, self.H), rng.choice(SKIES))
        self.d = ImageDraw.Draw(self.im)
        self.horizon = rng.uniform(.45, .7) * self.H
        self.d.rectangle([0, self.horizon, self.W, self.H], fill=rng.choice(GROUNDS))
        self.figs, self.used, self.span = [], set(), (0, 0)

    def shirt(self, named: float = .4):
        """A shirt not yet in the picture: a cast colour with probability `named`, else an
        anonymous one."""
        free = [c for c in CAST.values() if c not in self.used]
        c = self.rng.choice(free) if free and self.rng.random() < named else self.rng.choice(ANON)
        self.used.add(c)
        return c

    @contextmanager
    def figure(self, kind, role=None, shirt=None):
        self.ext = [1e9, 1e9, -1e9, -1e9]  # empty: the first draw call sets it
        yield
        x1, y1, x2, y2 = self.ext  # outward to whole pixels, so the box covers every drawn pixel
        box = (max(0, int(x1)), max(0, int(y1)),
               min(self.W, int(x2 + .999)), min(self.H, int(y2 + .999)))
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


# ============================================================================= figures
# Arm poses: (elbow, hand) relative to the shoulder, in figure heights, x towards where the figure
# faces.
ARMS = {"down": ((.06, .14), (.05, .3)), "forward": ((.17, .02), (.34, 0)),
        "reach": ((.14, .1), (.3, .14)), "up": ((.08, -.14), (.1, -.3)),
        "head": ((.22, .08), (.16, -.19)), "mouth": ((.2, .1), (.12, -.12)),
        "back": ((-.08, .14), (-.1, .28)), "wave": ((.16, -.1), (.2, -.28))}


def person(cv, x, gy, h, shirt, face=1, front="down", back="down", role=None, lift=0.0):
    """A standing figure, feet at (x, gy - lift), height h, facing right (face=1) or left, arms in
    ARMS poses (the far arm first, so the near one is drawn over the body); returns its front
    hand."""
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
        for dy in (-.5 * t, .5 * t):  # the legs
            leg = [(x + face * (2 * r + .42 * h), cy + dy), (x + face * .98 * h, cy + dy)]
            cv.line(leg, (40, 40, 60), lw)
        cv.rect(x + face * 1.8 * r, cy - t, x + face * (2 * r + .45 * h), cy + t, shirt)
        cv.ellipse(x + face * r, cy, r, r, cv.rng.choice(SKIN))


def gun(cv, hx, hy, face, h, role=None):
    """A gun gripped at (hx, hy), pointing towards `face`; returns its muzzle."""
    t = max(3, .07 * h)
    with cv.figure("gun", role):
        cv.rect(hx - face * .04 * h, hy - t, hx + face * .3 * h, hy, (55, 55, 55))
        cv.rect(hx - face * .04 * h, hy, hx + face * .03 * h, hy + .1 * h, (55, 55, 55))
    return hx + face * .3 * h, hy - t / 2


PLACARDS = ((250, 250, 240), (250, 240, 150), (200, 230, 250))


def sign(cv, hx, hy, h, role=None):
    """A placard on a stick held at (hx, hy) (or standing on the ground)."""
    bw, bh, top = .18 * h, .2 * h, hy - .25 * h
    with cv.figure("sign", role):
        cv.line([(hx, hy + .05 * h), (hx, top)], (120, 80, 40), max(2, h / 16))
        cv.rect(hx - bw, top - bh, hx + bw, top, cv.rng.choice(PLACARDS))
        slogan = cv.rng.choice(((200, 0, 0), INK))
        y = top - .5 * bh
        cv.line([(hx - .7 * bw, y), (hx + .7 * bw, y)], slogan, max(2, h / 20))


# Small objects: (width, height) in figure heights, colour, and the colour of an inner panel.
HELD = {"phone": (.1, .17, INK, (190, 220, 240)),
        "bill": (.24, .12, (60, 160, 70), (30, 110, 40)),
        "book": (.24, .18, (150, 60, 40), (245, 245, 235)),
        "food": (.12, .12, (250, 150, 30), None)}


def held(cv, hx, hy, h, kind, role=None):
    """A small object of HELD centred at a hand (or on a table top): a phone, bill, book or food."""
    w, ht, fill, inner = HELD[kind]
    with cv.figure(kind, role):
        if kind == "food":
            cv.ellipse(hx, hy, w * h / 2, w * h / 2, fill)
        else:
            dx, dy = w * h / 2, ht * h / 2
            cv.rect(hx - dx, hy - dy, hx + dx, hy + dy, fill)
            cv.rect(hx - dx / 2, hy - dy / 2, hx + dx / 2, hy + dy / 2, inner, outline=None)


def table(cv, x, gy, h, thing=None):
    """A table (scenery, no box) with an optional phone / bill / book / food on top (boxed, role
    'item')."""
    top = gy - .35 * h
    cv.d.rectangle([x - .25 * h, top, x + .25 * h, top + .05 * h], fill=(140, 95, 50), outline=INK)
    for dx in (-.2, .2):
        leg = [(x + dx * h, top), (x + dx * h, gy)]
        cv.d.line(leg, fill=(110, 75, 40), width=max(2, round(h / 16)))
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


BODIES = ((200, 60, 60), (60, 90, 170), (230, 200, 60), (90, 150, 90), (230, 230, 230))


def vehicle(cv, x1, gy, h, face, length, seats=(), role=None):
    """A car (or a bus when long) from x1 with one window per seat; `seats` (shirt, role) sit in the
    windows, the first one in the front window (towards `face`)."""
    L, x2 = length * h, x1 + length * h
    n = 4 if length > 1.4 else 2
    with cv.figure("bus" if n == 4 else "car", role):
        body = cv.rng.choice(BODIES)
        cv.rect(x1, gy - .45 * h, x2, gy - .12 * h, body)
        # the cabin's insets (back, front): a car's bonnet is in front, so the driver's side shows
        back, front = (.05, .05) if n == 4 else (.1, .3)
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
    things = ("building", "tree", "sun", "cloud", "building", "tree")
    for kind in rng.sample(things, rng.randint(0, 3)):
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
    """Pick a ground line, a figure height h and a direction so that `units` figure heights fit
    across (and `top` heights up); returns (gy, h, face, X) with X(u) the x of offset u (in h) from
    the start."""
    rng = cv.rng
    gy = rng.uniform(max(.8, cv.horizon / cv.H + .12), .97) * cv.H
    h = min(rng.uniform(.5, .75) * cv.H, .92 * cv.W / units, .93 * gy / top)
    x0 = rng.uniform(.04 * cv.W, max(.04 * cv.W, .96 * cv.W - units * h))
    face = rng.choice((1, -1))
    cv.span = (x0, x0 + units * h)  # clutter goes outside

    def X(u):
        return x0 + u * h if face == 1 else x0 + (units - u) * h

    return gy, h, face, X


def clutter(cv, no_gun=False):
    """A distractor left and right of the composition where there is room: a crate, a ball, a
    bystander or a gun on the ground (not next to an Attack or a death, where it would be an
    argument)."""
    rng = cv.rng
    gy = rng.uniform(max(.8, cv.horizon / cv.H + .1), .97) * cv.H
    for lo, hi in ((0, cv.span[0]), (cv.span[1], cv.W)):
        h = rng.uniform(.35, .6) * cv.H
        if hi - lo < .45 * h or rng.random() < .3:
            continue
        x = rng.uniform(lo + .22 * h, hi - .22 * h)
        kinds = ("crate", "ball", "bystander", "bystander") + (() if no_gun else ("gun",))
        kind = rng.choice(kinds)
        if kind == "crate":
            with cv.figure(kind):
                cv.rect(x - .15 * h, gy - .3 * h, x + .15 * h, gy, (170, 120, 60))
        elif kind == "ball":
            with cv.figure(kind):
                colour = rng.choice(((230, 60, 60), (60, 60, 230)))
                cv.ellipse(x, gy - .08 * h, .08 * h, .08 * h, colour)
        elif kind == "gun":
            gun(cv, x - .1 * h, gy - .08 * h, rng.choice((1, -1)), h)
        else:
            person(cv, x, gy, h, cv.shirt(.2), rng.choice((1, -1)), rng.choice(("down", "back")))


# ======================================================================== scenes of each event type
# Each draws one event from `figs` {image role: [shirt, ...]}, the people the text names in that
# role (the others are drawn at random), and records every figure with its M2E2 image role.
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
        height, face = h * rng.uniform(.9, 1.05), rng.choice((-f, -f, f))
        person(cv, X(1.05 + gap + .45 * i), gy, height, s, face, arms,
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
        height, face = h * rng.uniform(.88, 1.04), rng.choice((1, -1))
        back = rng.choice(("down", "back"))
        hx, hy = person(cv, X(.22 + .45 * i), gy, height, s, face, "up", back, role="Entity")
        sign(cv, hx, hy, h, role="Instrument")
    for j, s in enumerate(police):
        arms = rng.choice(("down", "back"))
        person(cv, X(.45 * n + .42 + .45 * j), gy, h, s, -f, arms, role="Police")


def meet(cv, figs):
    """Two people face to face, close (or shaking hands), maybe a third joining."""
    rng = cv.rng
    ents = list(figs.get("Entity") or [])[:3]
    while len(ents) < 2:
        ents.append(cv.shirt())
    shake = rng.random() < .5
    d = .64 if shake else rng.uniform(.42, .55)
    arms = "reach" if shake else "down"
    gy, h, f, X = fit(cv, .44 + d + .45 * (len(ents) - 2))
    person(cv, X(.22), gy, h, ents[0], f, arms, role="Entity")
    person(cv, X(.22 + d), gy, h * rng.uniform(.95, 1.0), ents[1], -f, arms, role="Entity")
    if len(ents) == 3:
        person(cv, X(.67 + d), gy, h * rng.uniform(.9, 1.0), ents[2], -f, "down", role="Entity")


def phone(cv, figs):
    """A phone at the head."""
    gy, h, f, X = fit(cv, .7)
    shirt = _pick(cv, figs, "Entity")
    back = cv.rng.choice(("down", "back"))
    hx, hy = person(cv, X(.3), gy, h, shirt, f, "head", back, role="Entity")
    held(cv, hx + f * .03 * h, hy, h, "phone", role="Instrument")


def arrest(cv, figs):
    """Police leading someone away by the arm (maybe in handcuffs), or a person behind bars."""
    rng = cv.rng
    who, agents = _pick(cv, figs, "Person"), list(figs.get("Agent") or [POLICE])[:2]
    if rng.random() < .6:
        gy, h, f, X = fit(cv, .95)
        person(cv, X(.22), gy, h, agents[0], f, "reach", role="Agent")
        height = h * rng.uniform(.9, 1.0)
        hx, hy = person(cv, X(.6), gy, height, who, f, "back", "back", role="Person")
        if rng.random() < .5:
            with cv.figure("handcuffs", "Instrument"):
                cv.ellipse(hx, hy, .06 * h, .04 * h, None, (60, 60, 60))
    else:
        agents = agents if "Agent" in figs or rng.random() < .5 else []
        gy, h, f, X = fit(cv, .75 + .45 * len(agents))
        face, arms = rng.choice((1, -1)), rng.choice(("down", "up"))
        person(cv, X(.35), gy, h * .9, who, face, arms, role="Person")
        x1, x2 = min(X(.05), X(.65)), max(X(.05), X(.65))
        cage(cv, x1, gy - 1.02 * h, x2, gy - 1, h, role="Instrument")
        for j, s in enumerate(agents):
            person(cv, X(.95 + .45 * j), gy, h, s, -f, "down", role="Agent")


def die(cv, figs):
    """A person lying on the ground, maybe in blood, maybe a gun beside them."""
    rng = cv.rng
    weapon = "Instrument" in figs or rng.random() < .35
    gy, h, f, X = fit(cv, 1.05 + (.4 if weapon else 0), top=.5)
    if rng.random() < .6:  # a pool of blood
        x1, x2 = min(X(.3), X(.8)), max(X(.3), X(.8))
        cv.d.ellipse([x1, gy - .1 * h, x2, gy + .02 * h], fill=(140, 10, 10))
    lying(cv, X(.03), gy, h, _pick(cv, figs, "Victim"), f, role="Victim")
    if weapon:
        gun(cv, X(1.12), gy - .08 * h, rng.choice((1, -1)), h, role="Instrument")


def transport(cv, figs):
    """People in the windows of a car or bus, the driver (Agent, if any) in front."""
    rng = cv.rng
    arts = list(figs.get("Artifact") or [cv.shirt() for _ in range(rng.randint(1, 2))])[:3]
    seats = [(s, "Agent") for s in list(figs.get("Agent") or [])[:1]]
    seats += [(s, "Artifact") for s in arts]
    length = 1.7 if len(seats) > 2 or rng.random() < .3 else 1.15
    gy, h, f, X = fit(cv, length + .04, top=.8)
    vehicle(cv, min(X(.02), X(length + .02)), gy, h, f, length, seats, role="Vehicle")


def transfer(cv, figs):
    """A bill held out to a reaching hand."""
    rng = cv.rng
    gy, h, f, X = fit(cv, 1.1)
    hx, hy = person(cv, X(.22), gy, h, _pick(cv, figs, "Giver"), f, "forward", role="Giver")
    height, recipient = h * rng.uniform(.97, 1.0), _pick(cv, figs, "Recipient")
    person(cv, X(.86), gy, height, recipient, -f, "reach", role="Recipient")
    held(cv, hx + f * .1 * h, hy, h, "bill", role="Money")


COMPOSE = {"Conflict:Attack": attack, "Conflict:Demonstrate": demonstrate, "Contact:Meet": meet,
           "Contact:Phone-Write": phone, "Justice:Arrest-Jail": arrest, "Life:Die": die,
           "Movement:Transport": transport, "Transaction:Transfer-Money": transfer}


# ============================================================================= event-free scenes
# Room for the loose object of an event-free scene, in figure heights.
ROOM = {"gun": .6, "table": .6, "sign": .6, "cage": .6, "car": 1.3}


def standing(cv, shirts=()):
    """People standing apart (never touching, never gun in hand) and maybe one loose object: a gun
    on the ground, a phone / bill / book on a table, a sign on its own, an empty car or cage, or a
    pair back to back."""
    rng = cv.rng
    shirts = list(shirts) or [cv.shirt() for _ in range(rng.randint(1, 3))]
    thing = rng.choice(("none", "gun", "table", "sign", "car", "cage", "backs"))
    backs = thing == "backs" and len(shirts) >= 2
    room = ROOM.get(thing, 0)
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
        height = h * rng.uniform(.9, 1.02)
        person(cv, X(u), gy, height, s, face, rng.choice(("down", "back")), role="agent")
        u += .5 if backs and i == 0 else .95


POSES = {"jumping": "up", "eating": "mouth", "reading": "reach", "waving": "wave"}  # the front arm


def activity(cv, verb):
    """One person doing something that is no M2E2 event: jumping, eating, reading, waving or
    sleeping."""
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
    jumping = verb == "jumping"
    hx, hy = person(cv, X(.3), gy, h, s, f, POSES[verb], "up" if jumping else "down", role="agent",
                    lift=.15 * h if jumping else 0)
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
