"""Data: readers for the real source formats, and records -> tensors.

(Being written; see the two sections below.)
"""
from __future__ import annotations

# ============================================================================= readers
# (section owned by the readers work: ACE/JMEE, SWiG, MNRE, M2E2)


# ============================================================================= tensors
# (section owned by the tensors work: tokenizer, images, examples, collate, sampler)
