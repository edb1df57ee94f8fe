"""put {object} on the pad showing {arithmetic expression}: the ``math`` family (task name "math").

3-4 digit pads with distinct digits lie on the table; the instruction names the answer, a digit 0-9,
only through an expression over single-digit operands ("the sum of two and one", "4 minus 1",
"two times three", "six divided by two"). No operand equals the answer, so the answer's numeral and
word never appear in the instruction. Success is the pad family's (``pad.pad_success``).
"""

from __future__ import annotations

import numpy as np

from vlabench.language import EXPRESSIONS, NUMBER_WORDS, Split, refer
from vlabench.sim.pads import DIGITS
from vlabench.tasks.base import pick
from vlabench.tasks.pad import PadTask
from vlabench.tasks.registry import register_task

OPS = ("add", "sub", "mul", "div")


def operand_pairs(answer: int) -> dict[str, list[tuple[int, int]]]:
    """Single-digit operand pairs (a, b) per operation that give ``answer``, neither operand equal to it.
    The identities (a + 0, a - 0, a * 1, a / 1) drop out by that rule."""
    if not 0 <= answer <= 9:
        raise ValueError(f"answer must be a digit 0-9, got {answer!r}")
    out: dict[str, list[tuple[int, int]]] = {op: [] for op in OPS}
    for a in range(10):
        for b in range(10):
            if answer in (a, b):
                continue
            if a + b == answer:
                out["add"].append((a, b))
            if a - b == answer:
                out["sub"].append((a, b))
            if a * b == answer:
                out["mul"].append((a, b))
            if b and a % b == 0 and a // b == answer:
                out["div"].append((a, b))
    return {op: pairs for op, pairs in out.items() if pairs}


def expression(rng: np.random.Generator, answer: int) -> tuple[str, str, tuple[int, int]]:
    """(phrase, operation, operands) for ``answer``: an operation uniformly among those that can make it,
    operands uniformly among its pairs, written all as numerals or all as words."""
    options = operand_pairs(answer)
    op = sorted(options, key=OPS.index)[int(rng.integers(len(options)))]
    a, b = options[op][int(rng.integers(len(options[op])))]
    words = bool(rng.random() < 0.5)
    fmt = (lambda v: NUMBER_WORDS[v]) if words else str
    template = EXPRESSIONS[op][int(rng.integers(len(EXPRESSIONS[op])))]
    return template.format(a=fmt(a), b=fmt(b)), op, (a, b)


def evaluate(op: str, a: int, b: int) -> int:
    """The value of ``a op b`` (exact division)."""
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a // b if b else -1}[op]


@register_task
class MathTask(PadTask):
    name = "math"
    gym_id = "Math"
    max_steps = 100
    splits = ("math",)
    example = "put the apple on the pad showing the sum of two and one"
    # Only in its own emergent split, never in training: "train" is the phrasing set that split uses.
    templates = {
        "train": ("put the {obj} on the pad showing {expr}", "place the {obj} on the pad with {expr}",
                  "move the {obj} to the pad that shows {expr}"),
        "heldout": (),
    }
    expert = "vlabench.experts.placing:PadExpert"
    order = 80

    def choose_symbols(self, rng: np.random.Generator, split: Split) -> tuple[list[str], int, dict]:
        answer = int(rng.integers(10))
        phrase, op, operands = expression(rng, answer)
        n = int(rng.integers(3, 5))
        digits = [answer]
        # Operand digits make tempting wrong pads: include each with even odds.
        for v in operands:
            if v not in digits and len(digits) < n and rng.random() < 0.5:
                digits.append(v)
        while len(digits) < n:
            digits.append(int(pick(rng, list(range(10)), exclude=digits)))
        order = rng.permutation(len(digits))
        symbols = [DIGITS[digits[i]] for i in order]
        facts = {"answer": answer, "expression": phrase, "op": op, "operands": list(operands)}
        return symbols, symbols.index(DIGITS[answer]), facts

    def describe(self, rng: np.random.Generator, split: Split, target, symbol: str, facts: dict) -> str:
        return self.instruction(split.phrasing, rng, obj=refer(target.name, target.synonyms, rng),
                                expr=facts["expression"])
