"""Task families. ``TASKS`` maps a task name to its (stateless) Task instance.

Splits per family (each family's ``splits``; training suites draw only from ``seen``):

==========  ====  ==============  =============  ==================  ===========  ==========  =================
family      seen  unseen_objects  unseen_colors  unseen_backgrounds  distractors  paraphrase  own emergent split
==========  ====  ==============  =============  ==================  ===========  ==========  =================
pick        yes   yes             yes            yes                 yes          yes
place       yes   yes             yes            yes                 yes          yes
push        yes                   yes            yes                 yes          yes
stack       yes                   yes            yes                 yes          yes
next_to     yes   yes             yes            yes                 yes          yes
pad         yes   yes             yes            yes                 yes          yes         symbols
relational                                                                                    relational
math                                                                                          math
category                                                                                      semantic
==========  ====  ==============  =============  ==================  ===========  ==========  =================

The reasoning families (relational, math, category) exist only in their own split: their scenes use
seen objects, backgrounds and pad symbols, so only the reasoning asked for is new.
"""

from __future__ import annotations

from vlabench.tasks.arithmetic import MathTask
from vlabench.tasks.category import CategoryTask
from vlabench.tasks.next_to import NextToTask
from vlabench.tasks.pad import PadTask
from vlabench.tasks.pick import PickTask
from vlabench.tasks.place import PlaceTask
from vlabench.tasks.push import PushTask
from vlabench.tasks.relational import RelationalTask
from vlabench.tasks.stack import StackTask
from vlabench.tasks.task import Task

TASKS: dict[str, Task] = {t.name: t for t in (PickTask(), PlaceTask(), PushTask(), StackTask(), NextToTask(), PadTask(),
                                              RelationalTask(), MathTask(), CategoryTask())}


def get_task(name: str) -> Task:
    """The task registered as ``name``; raises ValueError listing the known tasks."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]
