"""Fixed, documented numbers of the vlabench world. Everything is in metres, radians and seconds.

World frame: the Panda's base sits at the origin on the table top (z = 0), facing +x. The front camera
looks from +x back toward the robot, so the *viewer's* left is world -y and the viewer's right is +y.
Language ("left", "right") always means the front camera's view.
"""

PHYSICS_HZ = 240
"""Physics rate: one ``stepSimulation`` call advances 1/240 s."""
CONTROL_HZ = 10
"""Control rate: one ``env.step`` is 0.1 s."""
SUBSTEPS = PHYSICS_HZ // CONTROL_HZ
"""Physics substeps per control step (24)."""
SOLVER_ITERATIONS = 40
"""Constraint-solver iterations per substep (SIM_VERSION 1: 60). The solver was two thirds of the physics
time, mostly on the arm's joint motors. With 40 every scripted expert keeps >= 99% per cell over 100 seeds
(results/expert_success_*.md). Less physics lets tall and mesh objects (the bunny above all, also the
bottle, the lego brick, the teddy bear) slip in the grasp while carried: 30 iterations failed
place/unseen_objects (98%, even with friction anchors on the objects), 200 Hz with 40 iterations failed
next_to/unseen_objects (97%), and 120 Hz slipped too."""

MAX_POS_DELTA = 0.05
"""Metres of end-effector motion commanded by an action component of 1.0 (dx, dy, dz)."""
MAX_ROT_DELTA = 0.25
"""Radians of end-effector rotation commanded by an action component of 1.0 (droll, dpitch, dyaw)."""

WORKSPACE_LOW = (0.25, -0.40, 0.005)
"""Lower corner of the box the end-effector target is clipped to."""
WORKSPACE_HIGH = (0.80, 0.40, 0.50)
"""Upper corner of the box the end-effector target is clipped to."""

OBJECT_REGION_LOW = (0.36, -0.22)
"""Lower (x, y) corner of the table area where scene objects are sampled."""
OBJECT_REGION_HIGH = (0.64, 0.22)
"""Upper (x, y) corner of the table area where scene objects are sampled."""

TABLE_HALF_EXTENTS = (0.55, 0.70, 0.025)
"""Half sizes of the table slab; its top surface is z = 0 and it is centred at x = 0.45."""
TABLE_CENTER_X = 0.45

GRIPPER_MAX_WIDTH = 0.08
"""Fully open distance between the Panda fingers."""
GRIPPER_FORCE = 60.0
"""Newtons per finger when closing; with finger friction 1.5 this holds objects up to ~0.5 kg."""

SETTLE_STEPS = PHYSICS_HZ // 4
"""Physics substeps (0.25 s) run after spawning objects, so the first observation shows them at rest."""
SLEEP_THRESHOLD = 1e-4
"""Objects are put to sleep after settling and wake on contact (``World.settle``); a woken object falls
asleep again only after 2 s with squared velocity (m^2/s^2 + rad^2/s^2) under this (Bullet's default,
0.05, would freeze an object sliding at 0.2 m/s)."""

SIM_VERSION = 2
"""Version of what the simulator shows and does (physics, rendering, cameras). Bumped whenever a change
alters episodes or images; suite manifest hashes and results files include it, so results from
different versions cannot be mixed.

- 1: 240 Hz physics, 60 solver iterations; front camera (1.10, 0, 0.62) -> (0.40, 0, 0), 50 degrees; the
  table and backdrop rasterized; the Panda drawn with its collision meshes (3,440 triangles); mesh
  objects drawn with pybullet_data's visual meshes.
- 2: 40 solver iterations (SOLVER_ITERATIONS), resting objects put to sleep after settling
  (World.settle, SLEEP_THRESHOLD); front camera (1.05, 0, 0.75) -> (0.44, 0, 0),
  32 degrees (vlabench.sim.camera); table and backdrop ray-cast and composited behind the rasterized
  bodies (vlabench.sim.scenery, the same colours as TinyRenderer's); the Panda drawn with simplified
  convex hulls of its collision meshes and mesh objects with simplified visual meshes
  (vlabench.sim.meshes). Collision shapes are unchanged."""
