"""``vlabench serve POLICY --port P``: any vlabench policy behind the openpi WebSocket protocol.

Inference then runs where the model is (a GPU box) while env workers run elsewhere (``vlabench eval
--policy ws://HOST:P``), and any openpi client (``openpi_client.websocket_client_policy.WebsocketClientPolicy``)
can query it. On connect the server sends one metadata frame (``{"server": "vlabench", "policy": ..., "keys":
..., "action_dim": 7}``); then each observation frame is answered by ``{"actions": (1, 7) float32}``. A
failure inside the policy is answered with a text frame holding the traceback, and the server closes that
connection (openpi's convention); the server itself keeps serving.

Observation keys: the server takes vlabench's names (``image``, ``wrist_image``, ``state``, ``instruction``) or
the names ``keys`` maps them to (default: openpi's ``observation/image``, ``observation/wrist_image``,
``observation/state``, ``prompt``). The policy keeps per-slot memory: a slot is (connection, ``vlabench/slot``),
and a new episode starts when ``vlabench/is_first`` is true, or on a slot's first frame. A client that sends
neither gets one slot per connection, its episode starting when it connects. ``vlabench/rng_seed`` (sent by
vlabench's client: the episode's ``rng_seed``) seeds a stochastic policy's noise as in-process evaluation
does, so served and in-process outcomes agree.
"""

from __future__ import annotations

import itertools
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tyro.conf import Positional

from vlabench.agents.served import DEFAULT_KEYS, parse_keys
from vlabench.agents.spec import PolicySpec
from vlabench.agents.wire import pack, unpack
from vlabench.contracts import UserError
from vlabench.eval.runtime import build_policy, resolve_device


@dataclass
class ServeConfig:
    """Serve a policy over the openpi WebSocket protocol."""

    policy: Positional[str]
    """what to serve: a checkpoint directory, a built-in name, package.module:Class or an entry point"""
    port: int = 8000
    """TCP port to listen on"""
    host: str = "0.0.0.0"
    """interface to bind (0.0.0.0: every interface)"""
    device: str = "auto"
    """auto (CUDA when available), cpu, cuda or cuda:N"""
    bf16: bool = False
    """run the policy under bfloat16 autocast (CUDA only)"""
    policy_option: list[str] = field(default_factory=list)
    """KEY=VALUE options of the policy (as for vlabench eval)"""
    keys: str = DEFAULT_KEYS
    """vlabench key=client key renames the server accepts besides vlabench's own names"""


class PolicyServer:
    """The openpi-protocol server around one policy (``serve_forever`` / ``shutdown``; see the module docstring)."""

    def __init__(self, spec: PolicySpec, host: str = "0.0.0.0", port: int = 8000, device: str = "cpu",
                 bf16: bool = False, keys: str = DEFAULT_KEYS) -> None:
        from websockets.sync.server import serve

        traits = spec.traits()
        if traits.needs_expert or traits.needs_episode_info or "privileged" in traits.obs_keys:
            raise UserError(f"policy {spec.target!r} reads the expert's action, the episode's identity or the "
                            "privileged state, which a served observation does not carry; it cannot be served")
        self.spec = spec
        self.policy, self.act_ctx = build_policy(spec, device, bf16)
        self.policy.reset(1)
        self.rename = {client: ours for ours, client in parse_keys(keys).items()}
        self.metadata = {"server": "vlabench", "protocol": "openpi", "policy": spec.describe(),
                         "action_dim": 7, "keys": parse_keys(keys)}
        self._lock = threading.Lock()
        self._slots: dict[tuple[int, int], int] = {}
        self._ids = itertools.count()
        self._server = serve(self._handle, host, port, max_size=None, compression=None)
        self.port = self._server.socket.getsockname()[1]

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()

    def _obs_batch(self, conn: int, obs: dict, first_frame: bool) -> dict:
        named = {self.rename.get(k, k): v for k, v in obs.items()}
        missing = [k for k in ("image", "instruction") if k not in named]
        if missing:
            raise KeyError(f"observation lacks {missing} (got keys {sorted(obs)}); send vlabench's names or "
                           f"the mapped ones {sorted(self.rename)}")
        key = (conn, int(named.get("vlabench/slot", 0)))
        first = bool(named.get("vlabench/is_first", False)) or key not in self._slots
        slot = self._slots.setdefault(key, next(self._ids))
        batch: dict[str, Any] = {"image": np.asarray(named["image"], np.uint8)[None],
                                 "instruction": [str(named["instruction"])],
                                 "slot": np.array([slot]), "is_first": np.array([first or first_frame])}
        for k in ("wrist_image", "state"):
            if k in named:
                batch[k] = np.asarray(named[k])[None]
        batch["rng_seed"] = np.array([int(named.get("vlabench/rng_seed", slot))], np.int64)
        return batch

    def _handle(self, ws) -> None:
        conn = next(self._ids)
        ws.send(pack(self.metadata, "openpi"))
        first = True
        for frame in ws:
            try:
                obs = unpack(frame)
                if not isinstance(obs, dict):
                    raise ValueError(f"an observation frame must be a map, got {type(obs).__name__}")
                with self._lock:
                    batch = self._obs_batch(conn, obs, first)
                    with self.act_ctx():
                        action = np.asarray(self.policy.act(batch), np.float32)
                first = False
                ws.send(pack({"actions": action.reshape(1, -1)}, "openpi"))
            except Exception:
                ws.send(traceback.format_exc())
                ws.close()
                return


def run(cfg: ServeConfig) -> None:
    spec = PolicySpec.parse(cfg.policy, cfg.policy_option)
    server = PolicyServer(spec, cfg.host, cfg.port, resolve_device(cfg.device), cfg.bf16, cfg.keys)
    print(f"serving {spec.describe()['name']} ({spec.kind}) on ws://{cfg.host}:{server.port} (openpi protocol); "
          "Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    finally:
        server.shutdown()
