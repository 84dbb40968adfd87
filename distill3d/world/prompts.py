"""World objects and their prompts: ``"a red striped torus"`` <-> ``WorldObject``.

A prompt names every attribute, so it determines its object completely. The canonical
prompt spells the pattern out ("an orange plain cube"); ``parse_prompt`` also accepts it left
out ("an orange cube"), any case and spacing, "a" / "an" / no article, and a trailing view
suffix (", front view", ", side view", ", back view", ", overhead view").
"""

from __future__ import annotations

from dataclasses import dataclass

from distill3d.errors import UserError
from distill3d.world.vocabulary import COLOURS, PATTERNS, PLAIN, SHAPES, VIEW_BUCKETS

PROMPT_FORM = "'a <colour> [<pattern>] <shape>[, <front|side|back|overhead> view]'"


def _known(slot: str, words) -> str:
    return f"known {slot}s: {', '.join(words)}"


def _check_word(slot: str, word: str, words) -> None:
    if word not in words:
        raise UserError(f"unknown {slot} {word!r}; {_known(slot, words)}")


@dataclass(frozen=True)
class WorldObject:
    """One object of the world: a colour, a pattern and a shape (words of ``vocabulary``)."""

    colour: str
    pattern: str
    shape: str

    def __post_init__(self) -> None:
        _check_word("colour", self.colour, tuple(COLOURS))
        _check_word("pattern", self.pattern, PATTERNS)
        _check_word("shape", self.shape, SHAPES)

    @property
    def prompt(self) -> str:
        """Canonical prompt, e.g. "a red striped torus", "an orange plain cube"."""
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.pattern} {self.shape}"

    @property
    def index(self) -> int:
        """Position in ``all_objects()``: shape-major, then colour, then pattern."""
        s, c, p = SHAPES.index(self.shape), tuple(COLOURS).index(self.colour), PATTERNS.index(self.pattern)
        return (s * len(COLOURS) + c) * len(PATTERNS) + p

    @staticmethod
    def from_index(index: int) -> "WorldObject":
        """Inverse of ``index``."""
        if not 0 <= index < num_objects():
            raise UserError(f"object index {index} is outside 0..{num_objects() - 1}")
        rest, p = divmod(index, len(PATTERNS))
        s, c = divmod(rest, len(COLOURS))
        return WorldObject(tuple(COLOURS)[c], PATTERNS[p], SHAPES[s])

    def __str__(self) -> str:
        return self.prompt


def num_objects() -> int:
    """Number of attribute combinations."""
    return len(SHAPES) * len(COLOURS) * len(PATTERNS)


def all_objects() -> list[WorldObject]:
    """Every object of the world, ordered by ``WorldObject.index``."""
    return [WorldObject.from_index(i) for i in range(num_objects())]


def all_prompts() -> list[str]:
    """Canonical prompts of every object, ordered by ``WorldObject.index``."""
    return [obj.prompt for obj in all_objects()]


def _split_view(text: str) -> tuple[str, str | None]:
    """"a red torus, front view" -> ("a red torus", "front")."""
    if "," not in text:
        return text, None
    body, _, suffix = text.partition(",")
    words = suffix.split()
    if words and words[-1] == "view":
        words = words[:-1]
    if len(words) != 1 or words[0] not in VIEW_BUCKETS:
        raise UserError(f"unknown view {suffix.strip()!r}; {_known('view', VIEW_BUCKETS)} "
                        f"(written ', front view'); a prompt reads {PROMPT_FORM}")
    return body, words[0]


def _join_two_tone(words: list[str]) -> list[str]:
    out: list[str] = []
    for w in words:
        if out and out[-1] == "two" and w == "tone":
            out[-1] = "two-tone"
        else:
            out.append(w)
    return out


def parse_prompt(text: str) -> tuple[WorldObject, str | None]:
    """Parse a (possibly view-dependent) prompt into its object and view word (or None).

    Raises ``UserError`` naming the known words of the slot that did not match.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError(f"empty prompt; a prompt reads {PROMPT_FORM}")
    body, view = _split_view(" ".join(text.lower().split()))
    words = _join_two_tone(body.replace("twotone", "two-tone").split())
    if words and words[0] in ("a", "an"):
        words = words[1:]
    if len(words) == 2:
        words = [words[0], PLAIN, words[1]]
    if len(words) != 3:
        raise UserError(f"cannot read prompt {text!r}; a prompt reads {PROMPT_FORM}; "
                        f"{_known('colour', tuple(COLOURS))}; {_known('pattern', PATTERNS)}; "
                        f"{_known('shape', SHAPES)}")
    colour, pattern, shape = words
    return WorldObject(colour, pattern, shape), view
