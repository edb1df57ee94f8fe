"""A policy served by another process: ``--policy ws://HOST:PORT``, over the openpi or the vla-eval protocol.

**openpi** (``openpi-client``'s ``WebsocketClientPolicy``; what ``vlabench serve`` speaks): on connect the
server sends one frame of metadata; then every request is an observation map and every reply a map with
``"actions"`` of shape ``(horizon, 7)`` (or ``(7,)``). An error comes back as a text frame (the server's
traceback). vlabench sends one observation per slot that needs actions and queues the chunk per slot.
Observation keys are renamed by ``keys`` (default: ``image`` -> ``observation/image``, ``wrist_image`` ->
``observation/wrist_image``, ``state`` -> ``observation/state``, ``instruction`` -> ``prompt``, openpi's
LIBERO-example names), plus ``vlabench/slot``, ``vlabench/is_first`` and ``vlabench/rng_seed``
(``episode_keys=False`` leaves them out) so a stateful server keeps per-slot memory and seeds its noise per
episode.

**vla-eval** (allenai's vla-evaluation-harness): frames ``{type, payload, seq, timestamp}``; the client
sends ``hello`` and reads the server's action and observation specs, then per episode ``episode_start``,
one ``observation`` per step answered by ``action`` (``{"actions": ...}``), and ``episode_end``. The
session is stateful, so each slot gets its own connection. A server whose action spec is not a 7-D
delta action is refused with one line. Observations follow vla-eval's convention: ``images`` (a map of
camera name to HWC uint8), ``task_description``, ``state``.

``protocol="auto"`` tells them apart by the first frame: an openpi server speaks first, a vla-eval server
waits for ``hello``. Every receive has a timeout (``timeout_s``); a dead, hung or failing server raises,
which the harness records as an error for the affected episodes, and the next call reconnects.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import numpy as np

from vlabench.agents.wire import pack, unpack
from vlabench.contracts import ACTION_DIM, PolicyTraits, SlotMemory, UserError
from vlabench.models.configs import to_jsonable

PROTOCOLS = ("auto", "openpi", "vla-eval")
DEFAULT_KEYS = "image=observation/image,wrist_image=observation/wrist_image,state=observation/state,instruction=prompt"
FIRST_FRAME_WAIT_S = 1.0
"""How long ``auto`` waits for an openpi server's metadata frame before it says hello as vla-eval."""
DELTA_FORMATS = frozenset({"delta_xyz", "delta_euler_xyz", "euler_xyz", "axis_angle", "delta_axis_angle"})


class ServerError(RuntimeError):
    """The server answered with an error, closed, timed out or sent something that is not an action."""


def parse_keys(text: str) -> dict[str, str]:
    """``"image=observation/image,..."`` -> ``{"image": "observation/image", ...}``."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        src, sep, dst = item.partition("=")
        if not sep or not src or not dst:
            raise UserError(f"served-policy key mapping {item!r} must look like VLABENCH_KEY=SERVER_KEY")
        out[src] = dst
    return out


def _connect(url: str, timeout_s: float):
    from websockets.sync.client import connect

    try:
        conn = connect(url, open_timeout=timeout_s, close_timeout=1.0, max_size=None, compression=None)
    except (OSError, TimeoutError) as e:
        raise ServerError(f"cannot connect to the policy server at {url}: {type(e).__name__}: {e}") from None
    except Exception as e:  # websockets' handshake errors (InvalidURI, InvalidHandshake, ...)
        raise ServerError(f"cannot connect to the policy server at {url}: {type(e).__name__}: {e}") from None
    return conn.__enter__()  # a long-lived connection that its session closes (websockets >= 17.1 asks for this)


def _recv(ws, timeout_s: float, url: str) -> Any:
    try:
        frame = ws.recv(timeout=timeout_s)
    except TimeoutError:
        raise ServerError(f"the policy server at {url} sent nothing for {timeout_s:g} s") from None
    except Exception as e:  # ConnectionClosed and friends
        raise ServerError(f"the policy server at {url} closed the connection: {type(e).__name__}: {e}") from None
    if isinstance(frame, str):
        raise ServerError(f"the policy server at {url} reported an error:\n{frame.strip()[-2000:]}")
    return unpack(frame)


def check_action_spec(spec: dict | None, url: str) -> None:
    """Refuse (UserError) a vla-eval server whose declared action is not a 7-D delta action."""
    if not spec:
        return
    dims = sum(int(c.get("dims", 0)) for c in spec.values())
    position = next((c for c in spec.values() if c.get("name") == "position"), None)
    bad = dims != ACTION_DIM or (position is not None and position.get("format") != "delta_xyz") or any(
        c.get("name") == "rotation" and c.get("format") not in DELTA_FORMATS for c in spec.values())
    if bad:
        described = ", ".join(f"{k}: {c.get('dims')}-D {c.get('format')}" for k, c in spec.items())
        raise UserError(f"the policy server at {url} produces {described}; vlabench needs a 7-D delta action "
                        "(position 3-D delta_xyz, rotation 3-D delta, gripper 1-D, in [-1, 1])")


def vla_eval_observation(obs: dict, instruction: str) -> dict:
    """One env observation (``image``, ``wrist_image``, ``state``) in vla-eval's convention: ``images`` (camera
    name -> HWC uint8), ``task_description``, ``state``; what the client sends and the vla-eval adapter serves."""
    return {"images": {k: np.asarray(obs[k]) for k in ("image", "wrist_image") if k in obs},
            "task_description": str(instruction), "state": np.asarray(obs["state"], np.float32)}


class _OpenPISession:
    def __init__(self, url: str, timeout_s: float, first_frame: Any = None, ws=None) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.ws = ws or _connect(url, timeout_s)
        self.metadata = first_frame if first_frame is not None else _recv(self.ws, timeout_s, url)

    def infer(self, obs: dict) -> np.ndarray:
        try:
            self.ws.send(pack(obs, "openpi"))
        except Exception as e:
            raise ServerError(f"sending to the policy server at {self.url} failed: {type(e).__name__}: {e}") from None
        return _actions(_recv(self.ws, self.timeout_s, self.url), self.url)

    def close(self) -> None:
        self.ws.close()


class _VlaEvalSession:
    def __init__(self, url: str, timeout_s: float, ws=None) -> None:
        self.url, self.timeout_s, self.seq = url, timeout_s, 0
        self.ws = ws or _connect(url, timeout_s)
        hello = self._exchange("hello", {"harness_version": "vlabench", "protocol_version": 1}, expect="hello")
        check_action_spec(hello.get("action_spec"), url)
        self.metadata = hello
        self.in_episode = False

    def _send(self, kind: str, payload: dict) -> None:
        self.seq += 1
        frame = {"type": kind, "payload": payload, "seq": self.seq, "timestamp": time.time()}
        try:
            self.ws.send(pack(frame, "vla-eval"))
        except Exception as e:
            raise ServerError(f"sending to the policy server at {self.url} failed: {type(e).__name__}: {e}") from None

    def _exchange(self, kind: str, payload: dict, expect: str) -> dict:
        self._send(kind, payload)
        while True:
            msg = _recv(self.ws, self.timeout_s, self.url)
            if not isinstance(msg, dict) or "type" not in msg:
                raise ServerError(f"the policy server at {self.url} sent a frame that is not a vla-eval message")
            if msg["type"] == "error":
                raise ServerError(f"the policy server at {self.url} reported an error: {msg['payload'].get('error')}")
            if msg["type"] == expect:
                return msg["payload"]

    def start(self, task: dict) -> None:
        if self.in_episode:
            self._send("episode_end", {"success": None})
        self._send("episode_start", {"task": task})
        self.in_episode = True

    def infer(self, obs: dict) -> np.ndarray:
        return _actions(self._exchange("observation", obs, expect="action"), self.url)

    def close(self) -> None:
        if self.in_episode:
            try:
                self._send("episode_end", {"success": None})
            except ServerError:
                pass
        self.ws.close()


def _actions(reply: Any, url: str) -> np.ndarray:
    if not isinstance(reply, dict) or "actions" not in reply:
        keys = sorted(reply) if isinstance(reply, dict) else type(reply).__name__
        raise ServerError(f"the policy server at {url} replied without 'actions' (got {keys})")
    a = np.asarray(reply["actions"], np.float32)
    a = a[None] if a.ndim == 1 else a
    if a.ndim != 2 or a.shape[1] != ACTION_DIM or not len(a):
        raise ServerError(f"the policy server at {url} sent actions of shape {a.shape}; vlabench needs (horizon, 7)")
    return a


def open_session(url: str, protocol: str, timeout_s: float):
    """A connected session of ``protocol`` ("auto" tells them apart by who speaks first)."""
    if protocol == "openpi":
        return _OpenPISession(url, timeout_s)
    if protocol == "vla-eval":
        return _VlaEvalSession(url, timeout_s)
    ws = _connect(url, timeout_s)
    try:
        first = ws.recv(timeout=FIRST_FRAME_WAIT_S)
    except TimeoutError:
        return _VlaEvalSession(url, timeout_s, ws=ws)
    except Exception as e:
        raise ServerError(f"the policy server at {url} closed the connection: {type(e).__name__}: {e}") from None
    if isinstance(first, str):
        raise ServerError(f"the policy server at {url} reported an error:\n{first.strip()[-2000:]}")
    return _OpenPISession(url, timeout_s, first_frame=unpack(first), ws=ws)


class ServedPolicy(PolicyTraits):
    """Client of a policy server (see the module docstring); ``--policy ws://HOST:PORT`` builds one."""

    obs_keys: ClassVar[tuple[str, ...]] = ("image", "wrist_image", "state", "instruction")

    def __init__(self, url: str, protocol: str = "auto", timeout_s: float = 30.0, keys: str = DEFAULT_KEYS,
                 episode_keys: bool = True, n_action_steps: int = 0) -> None:
        if protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if timeout_s <= 0 or n_action_steps < 0:
            raise UserError(f"timeout_s must be > 0 and n_action_steps >= 0, got {timeout_s}, {n_action_steps}")
        self.url, self.protocol, self.timeout_s = url, protocol, float(timeout_s)
        self.keys, self.episode_keys, self.n_action_steps = parse_keys(keys), bool(episode_keys), int(n_action_steps)
        self.memory = SlotMemory()
        self._shared = None  # openpi: one connection for every slot
        self._sessions: dict[int, Any] = {}  # vla-eval: one per slot
        self.server_metadata: dict = {}

    # -- connections ----------------------------------------------------------------------------
    def _session(self, slot: int):
        if self._shared is not None:
            return self._shared
        if slot in self._sessions:
            return self._sessions[slot]
        session = open_session(self.url, self.protocol, self.timeout_s)
        self.server_metadata = session.metadata if isinstance(session.metadata, dict) else {}
        if isinstance(session, _OpenPISession):
            self.protocol, self._shared = "openpi", session
        else:
            self.protocol, self._sessions[slot] = "vla-eval", session
        return session

    def _drop(self, slot: int) -> None:
        """Forget a failed connection; the next request reconnects. (The harness ends the slot's episode as an
        error, so its next call starts a fresh episode.)"""
        session = self._shared if self._shared is not None else self._sessions.pop(slot, None)
        self._shared = None if self._shared is session else self._shared
        if session is not None:
            try:
                session.ws.close()
            except Exception:
                pass

    def reset(self, n_envs: int) -> None:
        self.memory.reset()

    def close(self) -> None:
        for session in [self._shared, *self._sessions.values()]:
            if session is not None:
                session.close()
        self._shared, self._sessions = None, {}

    # -- acting ---------------------------------------------------------------------------------
    def _obs_for(self, obs_batch: dict, row: int, slot: int, first: bool, vla_eval: bool) -> dict:
        keys = ("image", "wrist_image", "state")
        if vla_eval:
            return vla_eval_observation({k: obs_batch[k][row] for k in keys if k in obs_batch},
                                        obs_batch["instruction"][row])
        out = {self.keys.get(k, k): np.asarray(obs_batch[k][row]) for k in keys if k in obs_batch}
        out[self.keys.get("instruction", "instruction")] = str(obs_batch["instruction"][row])
        if self.episode_keys:
            out["vlabench/slot"], out["vlabench/is_first"] = int(slot), bool(first)
            if "rng_seed" in obs_batch:
                out["vlabench/rng_seed"] = int(obs_batch["rng_seed"][row])
        return out

    def act(self, obs_batch: dict) -> np.ndarray:
        states = self.memory.update(obs_batch)
        slots = [int(s) for s in obs_batch.get("slot", range(len(states)))]
        out = np.empty((len(states), ACTION_DIM), np.float32)
        for row, (st, slot) in enumerate(zip(states, slots)):
            try:
                session = self._session(slot)
                vla_eval = isinstance(session, _VlaEvalSession)
                if st.fresh and vla_eval:
                    session.start({"instruction": str(obs_batch["instruction"][row])})
                if not st.queue:
                    chunk = session.infer(self._obs_for(obs_batch, row, slot, st.fresh, vla_eval))
                    st.queue.extend(chunk[: self.n_action_steps or len(chunk)])
                out[row] = st.queue.popleft()
            except ServerError:
                self._drop(slot)
                raise
        return np.clip(out, -1.0, 1.0)

    def describe_server(self) -> dict:
        """Protocol and metadata of the server (connects once if nothing has been asked yet)."""
        if not self.server_metadata:
            session = open_session(self.url, self.protocol, self.timeout_s)
            self.server_metadata = session.metadata if isinstance(session.metadata, dict) else {}
            self.protocol = "openpi" if isinstance(session, _OpenPISession) else "vla-eval"
            session.close()
        return {"protocol": self.protocol, "metadata": to_jsonable(self.server_metadata)}

