"""`data info` report."""

from __future__ import annotations

from pathlib import Path

from vlabench.data.info import DataInfoConfig, run


def test_info_report(dataset_dir: Path, episodes: list[dict], capsys) -> None:
    text = run(DataInfoConfig(data=dataset_dir))
    assert text in capsys.readouterr().out
    n_frames = sum(len(e["actions"]) for e in episodes)
    assert f"episodes   {len(episodes)}" in text and f"frames     {n_frames}" in text
    assert "bytes/frame" in text
    for task, split in {(e["attrs"]["task"], e["attrs"]["split"]) for e in episodes}:
        n = sum(e["attrs"]["task"] == task and e["attrs"]["split"] == split for e in episodes)
        assert any(line.split()[:3] == [task, split, str(n)] for line in text.splitlines())
    for name in ("dx", "gripper", "qw", "q01", "std"):
        assert name in text
