"""`python -m toy --out DIR [--seed N] [--ace-train N ...]`: generate a toy world (world.py's
command line; `python -m toy --help` lists the sizes)."""
from .world import main

if __name__ == "__main__":
    main()
