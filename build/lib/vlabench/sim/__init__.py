"""The PyBullet world: client, table, lighting, renderer choice, Panda robot, cameras and object library."""
