"""A trivial model server written against vla-eval's own ModelServer, served by vla-eval's own serving code.

    python vla_eval_server.py PORT LOG_FILE [absolute]

Its action depends on the observation (dx = mean brightness of the front image, dy = the gripper state), so
a test can tell real replies from defaults; every episode start and end is appended to LOG_FILE. With
"absolute" it declares an absolute-position action, which vlabench must refuse.
"""

import json
import sys

import numpy as np
from vla_eval.model_servers.base import ModelServer
from vla_eval.model_servers.serve import serve
from vla_eval.specs import GRIPPER_CLOSE_POS, POSITION_ABSOLUTE, POSITION_DELTA, ROTATION_EULER


class Brightness(ModelServer):
    def __init__(self, log: str, absolute: bool) -> None:
        self.log, self.absolute = log, absolute

    def _note(self, event: str, payload: dict) -> None:
        with open(self.log, "a") as f:
            f.write(json.dumps({"event": event, "task": payload.get("task")}) + "\n")

    async def on_episode_start(self, config, ctx) -> None:
        self._note("start", config)

    async def on_episode_end(self, result, ctx) -> None:
        self._note("end", result)

    async def on_observation(self, obs, ctx) -> None:
        image = obs["images"]["image"]
        action = np.zeros(7, np.float32)
        action[0] = float(image.mean()) / 255.0
        action[1] = float(obs["state"][-1])
        action[6] = 1.0 if ctx.step % 2 else -1.0
        await ctx.send_action({"actions": action})

    def get_action_spec(self):
        position = POSITION_ABSOLUTE if self.absolute else POSITION_DELTA
        return {"position": position, "rotation": ROTATION_EULER, "gripper": GRIPPER_CLOSE_POS}

    def get_observation_spec(self):
        return {}


if __name__ == "__main__":
    port, log = int(sys.argv[1]), sys.argv[2]
    serve(Brightness(log, absolute=len(sys.argv) > 3), host="127.0.0.1", port=port)
