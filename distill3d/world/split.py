"""The fixed train / held-out split of the world's objects.

An object is held out when the SHA-256 digest of ``"<HELDOUT_SALT>:<canonical prompt>"``,
read as a big-endian integer, is below ``HELDOUT_PER_MILLE`` modulo 1000. Membership is a
function of the prompt alone: it needs no random state and does not change when words are
added to the vocabulary. The salt was fixed once so that about 10% of the combinations are
held out (28 of 256), every shape, colour and pattern stays in training, and every shape and
colour has at least two held-out objects (``tests/test_world.py`` checks all of it). No training data set may contain a
held-out object; every quality figure is computed on them.
"""

from __future__ import annotations

import hashlib

from distill3d.world.prompts import WorldObject, all_objects

__all__ = ["HELDOUT_SALT", "HELDOUT_PER_MILLE", "is_heldout", "heldout_objects", "train_objects", "all_objects"]

HELDOUT_SALT = "distill3d-world-heldout-117"
HELDOUT_PER_MILLE = 100


def is_heldout(obj: WorldObject) -> bool:
    """True when ``obj`` belongs to the held-out part of the world."""
    digest = hashlib.sha256(f"{HELDOUT_SALT}:{obj.prompt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 1000 < HELDOUT_PER_MILLE


def heldout_objects() -> list[WorldObject]:
    """Held-out objects, ordered by index."""
    return [o for o in all_objects() if is_heldout(o)]


def train_objects() -> list[WorldObject]:
    """Objects that training data may contain, ordered by index."""
    return [o for o in all_objects() if not is_heldout(o)]
