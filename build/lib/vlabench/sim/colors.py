"""Named colours used by objects, instructions and backgrounds (RGBA in [0, 1])."""

COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "green": (0.15, 0.65, 0.20, 1.0),
    "blue": (0.15, 0.30, 0.85, 1.0),
    "yellow": (0.95, 0.85, 0.10, 1.0),
    "orange": (0.98, 0.50, 0.05, 1.0),
    "purple": (0.55, 0.20, 0.70, 1.0),
    "pink": (0.98, 0.55, 0.70, 1.0),
    "white": (0.95, 0.95, 0.95, 1.0),
    "black": (0.08, 0.08, 0.08, 1.0),
    "brown": (0.50, 0.30, 0.12, 1.0),
    "gray": (0.55, 0.55, 0.55, 1.0),
    "cyan": (0.10, 0.80, 0.85, 1.0),
}


def rgba(name: str) -> tuple[float, float, float, float]:
    """The RGBA of a named colour; raises ValueError listing the known names."""
    try:
        return COLORS[name]
    except KeyError:
        raise ValueError(f"unknown color {name!r}; known: {', '.join(COLORS)}") from None
