"""Demo data layer: HDF5 shards, manifest, statistics, the torch dataset and exporters.

Typical use::

    with ShardWriter(root, shard_index=worker_id, index_stride=n_workers) as w:
        for episode in episodes:          # Episode record dicts (see shards.normalize_episode)
            w.write(episode)
    ds = DemoDataset(root, n_obs=2, horizon=8)

`completed_keys(root)` lists the episodes already on disk (to resume an interrupted collection).
`verify_dataset(root, skip_bad=False)` re-hashes every shard against the checksum recorded when it
was written (call it before long work such as training or export).
Submodules import lazily so that `import vlabench.data` stays cheap (no torch import).
"""

from vlabench.data.manifest import (
    CorruptShardError, EpisodeKey, completed_keys, load_manifest, manifest_episodes, rebuild_manifest, verify_dataset,
)
from vlabench.data.shards import DEFAULT_EPISODES_PER_SHARD, ShardWriter, normalize_episode, read_episode

__all__ = [
    "CorruptShardError", "EpisodeKey", "completed_keys", "load_manifest", "manifest_episodes",
    "rebuild_manifest", "verify_dataset", "DEFAULT_EPISODES_PER_SHARD", "ShardWriter", "normalize_episode", "read_episode",
    "DemoDataset", "compute_stats", "ensure_stats", "load_stats",
]


def __getattr__(name: str):
    if name == "DemoDataset":
        from vlabench.data.dataset import DemoDataset

        return DemoDataset
    if name in ("compute_stats", "ensure_stats", "load_stats"):
        from vlabench.data import stats

        return getattr(stats, name)
    raise AttributeError(f"module 'vlabench.data' has no attribute {name!r}")
