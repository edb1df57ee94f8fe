"""Experts of the emergent families: set-down experts that carry the target beside a reference (next_to)
or onto a pad (pad, math). All reuse the closed-loop pick-carry-release waypoints of ``PickExpert`` /
``PlaceAtExpert`` (re-grasping included), shared with the core families."""

from __future__ import annotations

import numpy as np

from vlabench.experts.grasping import PickExpert, PlaceAtExpert
from vlabench.sim.pads import PAD_THICKNESS
from vlabench.tasks.next_to import free_spot
from vlabench.tasks.pad import goal_pad

RELEASE_GAP = 0.01
"""Height (m) of the object's bottom above the surface when the gripper opens: low enough that nothing
bounces or rolls away, high enough that the object never scrapes the surface on the way in."""


class RegraspPickExpert(PickExpert):
    """Pick (relational and category families); ``PickExpert`` itself re-grasps."""


class SetDownExpert(PlaceAtExpert):
    """Release so the object's bottom is ``RELEASE_GAP`` above a surface at height ``surface``."""

    def release_z(self, surface: float) -> float:
        # The grasp point was closed grasp_z above the object's bottom, with the object on the table.
        return surface + self._grasp[0][2] + RELEASE_GAP


class NextToExpert(SetDownExpert):
    def goal(self):
        scene = self.env.scene
        target, ref = scene.by_role("target"), scene.by_role("reference")
        r, _ = self.obj_pose(ref)
        if not hasattr(self, "_offset"):
            # Choose the spot once, from the scene at the first call; then follow the reference if it moves.
            others = [(self.obj_pose(o)[0][:2], o.spec.radius) for o in scene.objects if o is not target and o is not ref]
            t, _ = self.obj_pose(target)
            spot = free_spot(r[:2], ref.spec, target.spec, others, t[:2])
            if spot is None:  # the sampler guarantees a spot at reset; this only guards odd physics
                spot = r[:2] + np.array([0.0, ref.spec.radius + target.spec.radius + 0.012])
            self._offset = spot - r[:2]
        xy = r[:2] + self._offset
        return np.array([xy[0], xy[1], self.release_z(0.0)]), 0.0


class PadExpert(SetDownExpert):
    def goal(self):
        pad = goal_pad(self.env.scene)
        c, _ = self.obj_pose(pad)
        return np.array([c[0], c[1], self.release_z(c[2] + PAD_THICKNESS / 2)]), 0.0
