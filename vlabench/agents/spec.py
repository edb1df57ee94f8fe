"""The policy boundary: :class:`PolicySpec` says which policy a ``--policy`` string (or a Python object)
names, describes it for provenance, declares its traits without building it, and builds it.

Forms of ``--policy`` (tried in this order):

- ``expert``, ``random``, ``noop``, ``replay:DATASET_DIR``: the built-in policies;
- an existing directory: a checkpoint (or a training run, whose ``latest/`` is used);
- ``package.module:ClassName``: your own class, imported and built as ``ClassName(**options)`` (plus
  ``device=`` when its constructor takes one);
- a name registered by an installed package in the entry-point group ``vlabench.policies``
  (``[project.entry-points."vlabench.policies"] my-policy = "my_pkg.policy:MyPolicy"``);
- ``ws://HOST:PORT`` (or ``wss://``): a policy served by another process, over the openpi or the
  vla-eval protocol (vlabench.agents.served; options ``protocol``, ``timeout_s``, ``keys``, ...).

``--policy-option KEY=VALUE`` values reach the checkpoint's policy class or your constructor, converted
to the type of the parameter's default. In Python, ``vlabench.eval.harness.run(cfg, policy=obj)`` takes a
spec or a ready policy instance.

Every module that needs to know what a policy is goes through this one: the eval harness and its
backends, the pipeline and the profile checks.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

from vlabench.agents.builtin import BUILTIN_POLICIES, ExpertPolicy, NoopPolicy, RandomPolicy, ReplayPolicy
from vlabench.contracts import Traits, UserError, coerce_option, parse_options

ENTRY_POINT_GROUP = "vlabench.policies"
KINDS = ("builtin", "checkpoint", "import", "entry_point", "served", "instance")
_IMPORT_STRING = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
BUILTIN_CLASSES = {"expert": ExpertPolicy, "random": RandomPolicy, "noop": NoopPolicy, "replay": ReplayPolicy}


def entry_points() -> dict[str, metadata.EntryPoint]:
    """Policies registered by installed packages, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


@dataclass(frozen=True)
class PolicySpec:
    """A policy, named but not built. Frozen and picklable (an instance spec pickles its instance)."""

    kind: str
    """builtin | checkpoint | import | entry_point | served | instance"""
    target: str
    """The built-in name (replay: ``replay:DIR``), the checkpoint path, the import string, the entry
    point's name, or the instance's class as ``module:Class``."""
    options: tuple[tuple[str, Any], ...] = ()
    """Constructor / inference options, sorted by key."""
    instance: Any = field(default=None, compare=False, repr=False)

    # -- making one -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str | Path, options: Sequence[str] | Mapping[str, Any] = ()) -> "PolicySpec":
        """The spec a ``--policy`` string names; UserError naming the valid forms when it names none."""
        text = str(text)
        opts = tuple(sorted(parse_options(options).items()))
        name, _, arg = text.partition(":")
        if text in BUILTIN_POLICIES or (name == "replay" and arg):
            if name == "replay" and not arg:
                raise UserError("policy 'replay' needs a demo dataset: use 'replay:DATASET_DIR'")
            if opts:
                raise UserError(f"policy options {[k for k, _ in opts]} apply to checkpoints and your own classes, "
                                f"not to the built-in {text!r}")
            return cls("builtin", text)
        if text == "replay":
            raise UserError("policy 'replay' needs a demo dataset: use 'replay:DATASET_DIR'")
        if text.startswith(("ws://", "wss://")):
            return cls("served", text, opts)
        path = Path(text)
        if path.is_dir():
            return cls("checkpoint", text, opts)
        if path.exists():
            raise UserError(f"policy {text!r} is a file; a checkpoint is a directory (holding model.safetensors "
                            "and config.json, or a run directory with latest/)")
        if _IMPORT_STRING.match(text):
            return cls("import", text, opts)
        if text in entry_points():
            return cls("entry_point", text, opts)
        registered = ", ".join(sorted(entry_points())) or "none installed"
        raise UserError(f"unknown policy {text!r}; valid: {', '.join(BUILTIN_POLICIES)} (replay as "
                        "'replay:DATASET_DIR'), an existing checkpoint directory, 'package.module:ClassName', "
                        f"ws://HOST:PORT (a policy server), or a registered entry point ({ENTRY_POINT_GROUP}: {registered})")

    @classmethod
    def of(cls, policy: "PolicySpec | str | Path | Any", options: Sequence[str] | Mapping[str, Any] = ()) -> "PolicySpec":
        """A spec from a spec, a ``--policy`` string, or a ready policy instance."""
        if isinstance(policy, PolicySpec):
            if options:
                raise UserError("give policy options inside the PolicySpec, not beside it")
            return policy
        if isinstance(policy, (str, Path)):
            return cls.parse(policy, options)
        if not (callable(getattr(policy, "act", None)) and callable(getattr(policy, "reset", None))):
            raise UserError(f"{type(policy).__name__} is not a policy: it needs reset(n_envs) and act(obs_batch)")
        if options:
            raise UserError("policy options apply to policies vlabench builds, not to a ready instance")
        t = type(policy)
        return cls("instance", f"{t.__module__}:{t.__qualname__}", (), policy)

    # -- what it is -----------------------------------------------------------------------------
    def policy_class(self) -> type:
        """The class the spec builds, without building it (a checkpoint's config names its family)."""
        if self.kind == "builtin":
            return BUILTIN_CLASSES[self.target.partition(":")[0]]
        if self.kind == "instance":
            return type(self.instance)
        if self.kind == "checkpoint":
            from vlabench.models.checkpoint import read_config
            from vlabench.models.registry import get_spec

            return get_spec(read_config(self.target).get("model")).policy_cls
        if self.kind == "served":
            from vlabench.agents.served import ServedPolicy

            return ServedPolicy
        if self.kind == "import":
            module, _, qualname = self.target.partition(":")
            try:
                obj: Any = importlib.import_module(module)
            except ImportError as e:
                raise UserError(f"policy {self.target!r}: cannot import module {module!r} ({e})") from None
            for part in qualname.split("."):
                if not hasattr(obj, part):
                    raise UserError(f"policy {self.target!r}: module {module!r} has no attribute {qualname!r}")
                obj = getattr(obj, part)
            return obj
        try:
            return entry_points()[self.target].load()
        except Exception as e:
            raise UserError(f"policy entry point {self.target!r} ({ENTRY_POINT_GROUP}) failed to load: "
                            f"{type(e).__name__}: {e}") from None

    def traits(self) -> Traits:
        """What the policy declares (needs the expert, episode info, which observation keys, stochastic)."""
        return Traits.of(self.instance if self.kind == "instance" else self.policy_class())

    @property
    def uses_torch(self) -> bool:
        """Whether ``act`` may run torch (it then runs under inference mode); never for the built-ins."""
        if self.kind in ("builtin", "served"):
            return False
        if self.kind == "checkpoint":
            return True
        try:
            return importlib.util.find_spec("torch") is not None
        except (ImportError, ValueError):  # not installed (or hidden, as the light-install test hides it)
            return False

    def describe(self) -> dict:
        """Provenance: ``{"name", "kind", "checkpoint", "checkpoint_hash", "options"}``, plus ``import``,
        ``package`` and ``version`` for your own classes (hashing a checkpoint, not loading it)."""
        base = {"name": self.target, "kind": self.kind, "checkpoint": None, "checkpoint_hash": None,
                "options": dict(self.options)}
        if self.kind == "builtin":
            return base
        if self.kind == "checkpoint":
            from vlabench.fileio import portable_path
            from vlabench.models.checkpoint import checkpoint_hash, read_config, resolve_checkpoint_dir

            from vlabench.models.checkpoint import inference_defaults

            path = resolve_checkpoint_dir(self.target)
            try:
                name = read_config(path).get("model") or path.name
                defaults = inference_defaults(path)
            except (OSError, ValueError):
                name, defaults = path.name, {}
            return {**base, "name": str(name), "checkpoint": portable_path(path), "checkpoint_hash": checkpoint_hash(path),
                    "inference": {**defaults, **dict(self.options)}}
        if self.kind == "served":  # asks the server for its metadata
            return {**base, "server": self.build().describe_server()}
        cls = self.policy_class()
        package, version = _distribution_of(cls)
        return {**base, "import": f"{cls.__module__}:{cls.__qualname__}", "package": package, "version": version}

    # -- building it ----------------------------------------------------------------------------
    def build(self, device: str = "cpu") -> Any:
        """The ready policy (device: a resolved torch device for learned policies)."""
        opts = dict(self.options)
        if self.kind == "instance":
            return self.instance
        if self.kind == "builtin":
            name, _, arg = self.target.partition(":")
            return ReplayPolicy(arg) if name == "replay" else BUILTIN_CLASSES[name]()
        if self.kind == "checkpoint":
            from vlabench.models.checkpoint import load_policy

            return load_policy(self.target, device, **opts)
        cls = self.policy_class()
        if self.kind == "served":
            opts["url"] = self.target
        params = inspect.signature(cls).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        unknown = sorted(k for k in opts if k not in params and not takes_any)
        if unknown:
            valid = [n for n in params if n not in ("device", "url")]
            raise UserError(f"policy options {unknown} are not parameters of {self.target}; valid: "
                            f"{', '.join(valid) or 'none'}")
        kwargs = {k: coerce_option(params[k].default if k in params else inspect.Parameter.empty, v, k)
                  for k, v in opts.items()}
        if "device" in params:
            kwargs["device"] = device
        policy = cls(**kwargs)
        if not (callable(getattr(policy, "act", None)) and callable(getattr(policy, "reset", None))):
            raise UserError(f"{self.target} built a {type(policy).__name__}, which is not a policy: it needs "
                            "reset(n_envs) and act(obs_batch)")
        return policy


def _distribution_of(cls: type) -> tuple[str | None, str | None]:
    """(distribution name, version) of the installed package a class comes from, else (None, None)."""
    top = cls.__module__.partition(".")[0]
    for dist in metadata.packages_distributions().get(top, []):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None, None
