"""An anytime-valid paired comparison of two policies: a beta-binomial mixture martingale on the discordant pairs.

Two policies run on the same episodes. A pair where both succeed or both fail says nothing about which is
better; of the discordant pairs, let k be those A wins and m the number of discordant pairs. Under H0
(A and B have the same success probability on this suite, p_A = p_B, the null of McNemar's test) each
discordant pair is, given that it is discordant, a fair coin: A wins with probability 1/2, whatever the
pairs before it. The likelihood ratio of the mixture over theta ~ Beta(a, a) against theta = 1/2,

    M_m = 2^m * B(k + a, m - k + a) / B(a, a),

is then a non-negative martingale with M_0 = 1, and Ville's inequality gives P(sup_m M_m >= 1/alpha) <= alpha:
stopping the first time M reaches 1/alpha, after any number of pairs and however the stopping was chosen
(peeking after every pair included), wrongly declares a difference with probability at most alpha. The
decision's direction is the sign of k - m/2. (The mixture SPRT of Robbins 1970; as an e-value, Ramdas et al.
2023, "Game-theoretic statistics and safe anytime-valid inference".) ``a`` = 1 (a uniform prior on theta)
by default; a larger ``a`` is more powerful for small differences and slower for large ones.

What it does not give: an estimate of the size of the difference (use the paired tables for that), or a
guarantee when pairs are not exchangeable (a policy that drifts during the run), or any correction for
running several comparisons. An episode that ended in an error counts as a failure, as in eval's tables.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

DECISIONS = ("A better", "B better", "continue", "no decision")


def log_mixture(k: int, m: int, a: float = 1.0) -> float:
    """log M_m for k wins of A among m discordant pairs (see the module docstring)."""
    if not 0 <= k <= m or a <= 0:
        raise ValueError(f"need 0 <= k <= m and a > 0, got k={k}, m={m}, a={a}")
    lbeta = lambda x, y: math.lgamma(x) + math.lgamma(y) - math.lgamma(x + y)  # noqa: E731
    return m * math.log(2.0) + lbeta(k + a, m - k + a) - lbeta(a, a)


@dataclass(frozen=True)
class SequentialResult:
    decision: str
    """"A better" | "B better" | "no decision" (max pairs reached) | "continue" (pairs left)"""
    pairs_used: int
    """Pairs seen when it stopped (all of them without a decision)."""
    discordant: int
    a_wins: int
    log_e: float
    """log of the mixture martingale when it stopped."""
    threshold: float
    """log(1/alpha)."""
    alpha: float

    def line(self) -> str:
        return (f"{self.decision} after {self.pairs_used} pairs ({self.discordant} discordant: A won {self.a_wins}, "
                f"B won {self.discordant - self.a_wins}); e-value {math.exp(min(self.log_e, 700)):.3g} against "
                f"1/alpha = {1 / self.alpha:g}")


def sequential_test(outcomes: Iterable[tuple[bool, bool]], alpha: float = 0.05, a: float = 1.0,
                    max_pairs: int = 0, finished: bool = True) -> SequentialResult:
    """Run the test over ``(success_a, success_b)`` pairs in order; stop at the first crossing.

    ``max_pairs`` (0 = no limit) stops without a decision there; ``finished`` says whether the pairs given
    are all there will be ("no decision") or more may come ("continue")."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    threshold = math.log(1.0 / alpha)
    k = m = n = 0
    log_e = 0.0
    for sa, sb in outcomes:
        if max_pairs and n >= max_pairs:
            return SequentialResult("no decision", n, m, k, log_e, threshold, alpha)
        n += 1
        if sa != sb:
            m += 1
            k += int(sa)
            log_e = log_mixture(k, m, a)
            if log_e >= threshold:
                return SequentialResult("A better" if 2 * k > m else "B better", n, m, k, log_e, threshold, alpha)
    done = finished or (max_pairs and n >= max_pairs)
    return SequentialResult("no decision" if done else "continue", n, m, k, log_e, threshold, alpha)


def interleave_by_cell(keys: Sequence[tuple]) -> list[tuple]:
    """Episode keys (task, split, index, seed) in round-robin order over the (task, split) cells, each cell
    in index order: the order in which a comparison that stops early has seen every cell about equally."""
    cells: dict[tuple, list[tuple]] = {}
    for key in sorted(keys, key=lambda k: (k[0], k[1], k[2])):
        cells.setdefault((key[0], key[1]), []).append(key)
    out, queues = [], list(cells.values())
    for i in range(max((len(q) for q in queues), default=0)):
        out += [q[i] for q in queues if i < len(q)]
    return out
