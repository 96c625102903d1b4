"""The toy multimedia world: a small, deterministic stand-in for ACE, SWiG, MNRE and M2E2, written
in their real file formats (layout: docs/real_data.md), so the readers, training and the scorer run
the same code as on real data::

    python -m toy --out data/toy --seed 0     # the default world, a few seconds
    python -m toy.tools stats data/toy        # what a world holds (also: baseline, draw)

The modules, in the order they import each other:

* pictures.py: how the pictures are drawn (the cast's shirt colours, a canvas that records exact
  boxes, one scene per event type).
* text.py: how the sentences are written (vocabulary, templates, stories, the sentence builder).
* world.py: the generator (`generate`, `Sizes`), `ensure_data` behind train.py's --data, and the
  command line that `python -m toy` runs (__main__.py).
* tools.py: looking at a world through data.py's readers: statistics, the keyword baseline, a
  document viewer. Not imported here, since it needs the readers and the scorer.

`import toy` loads no project module but schema: no torch, no reader, no scorer.
"""
from .world import DEFAULT_DATA, Sizes, ensure_data, generate

__all__ = ["DEFAULT_DATA", "Sizes", "ensure_data", "generate"]
