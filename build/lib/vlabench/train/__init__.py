"""The shared training loop, its command line and checkpoint writing.

Public API:
    train(model_name, model_cfg, train_cfg, data_dir, out_dir, resume=False, skip_bad=False) -> Path  (loop.py)
    Trainer                                                                                           (loop.py)
    TrainConfig, load_recipe(path)                                                                    (config.py)
    parse_train_args(argv), run(args)             the `vlabench train` command                        (command.py)
    save_checkpoint(...), copy_checkpoint(...)    writing; reading is vlabench.models.checkpoint      (checkpoint.py)
"""

from vlabench.train.checkpoint import copy_checkpoint, save_checkpoint
from vlabench.train.command import parse_train_args, run
from vlabench.train.config import TrainConfig, load_recipe
from vlabench.train.loop import Trainer, train

__all__ = ["TrainConfig", "Trainer", "copy_checkpoint", "load_recipe", "parse_train_args", "run", "save_checkpoint",
           "train"]
