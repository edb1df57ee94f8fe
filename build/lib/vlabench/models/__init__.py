"""Learned policies, one package per family (rt1/, rt2/, diffusion/, goal_image/), the blocks they
share (blocks/), their configs and presets (configs.py), the family registry (registry.py) and the
one way to read a checkpoint (checkpoint.py).

models/ is the ground floor of the learned side: it imports nothing from data/, train/, eval/,
report/, the simulator, the tasks or the CLI (a test walks the imports to keep it so).
"""
