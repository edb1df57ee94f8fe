"""The shared training loop and checkpoints.

Public API:
    train(model_name, model_cfg, train_cfg, data_dir, out_dir, resume=False) -> Path   (loop.py)
    run(argv | TrainCommand) -> Path                  entry of `vlabench train`          (loop.py)
    TrainConfig, load_recipe(path), parse_train_args(argv)                               (config.py)
    save_checkpoint(...), load_checkpoint(dir, device), load_policy(path, device),
    checkpoint_hash(dir)                                                                 (checkpoint.py)
"""

from vlabench.train.checkpoint import (CheckpointInfo, checkpoint_hash, load_checkpoint, load_policy,
                                       save_checkpoint)
from vlabench.train.config import TrainConfig, load_recipe, parse_train_args
from vlabench.train.loop import TrainCommand, Trainer, run, train

__all__ = ["CheckpointInfo", "TrainCommand", "TrainConfig", "Trainer", "checkpoint_hash", "load_checkpoint",
           "load_policy", "load_recipe", "parse_train_args", "run", "save_checkpoint", "train"]
