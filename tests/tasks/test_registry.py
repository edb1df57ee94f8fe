"""The task-family registry: a family is one module (plus its expert), discovered and registered on import.

The toy family below lives in this test module only: registering it puts it in TASKS, in the language
templates and in Gymnasium's registry, and its expert (named by a string) drives ``env.expert_action()``.
"""

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from vlabench import language
from vlabench.experts import expert_class
from vlabench.tasks import TASKS, Task, get_task, register_task, split_table, unregister_task
from vlabench.tasks.base import Scene, SceneObject, background_for, object_pool, pick, place, random_yaw
from vlabench.tasks.registry import env_id

SHIPPED = ["pick", "place", "push", "stack", "next_to", "pad", "relational", "math", "category"]

# Recorded with the templates still in language.TEMPLATES (before families declared their own): moving
# them must not change a single instruction, or every suite's scenes and the README's tables would move.
RECORDED = {
    ("pick", "seen", 0): "pick up the strawberry",
    ("pick", "paraphrase", 7): "raise the yellow ball off the table",
    ("place", "unseen_objects", 1): "put the jenga block in the plate",
    ("push", "seen", 1000003): "push the blue cylinder toward the left side",
    ("push", "paraphrase", 0): "shove the white cylinder so it ends up at the left side",
    ("stack", "distractors", 7): "place the yellow block on the pink block",
    ("next_to", "paraphrase", 1): "bring the lego close to the mug",
    ("next_to", "unseen_colors", 0): "move the white ball next to the pink cube",
    ("pad", "symbols", 7): "put the yellow ball on the letter R pad",
    ("pad", "paraphrase", 1000003): "the blue cube goes on the letter A pad",
    ("relational", "relational", 0): "grab the biggest object",
    ("relational", "relational", 7): "grab the largest object",
    ("math", "math", 1): "place the lego on the pad with the difference between nine and four",
    ("math", "math", 1000003): "put the blue block on the pad showing 3 plus 3",
    ("category", "semantic", 0): "pick up the berry",
    ("category", "semantic", 7): "grab something to eat",
}


class ToyExpert:
    """Stands still and closes the gripper; counts how often it was built."""

    made = 0
    ACTION = np.array([0, 0, 0, 0, 0, 0, 0.5], np.float32)

    def __init__(self, env, noise: float = 0.0, rng=None) -> None:
        type(self).made += 1
        self.env = env

    def act(self) -> np.ndarray:
        return self.ACTION.copy()


class ToyTask(Task):
    """touch {object}: one seen object, no distractors; never succeeds."""

    name = "toy_touch"
    gym_id = "ToyTouch"
    max_steps = 5
    splits = ("seen", "paraphrase")
    example = "touch the apple"
    templates = {"train": ("touch the {obj}", "tap the {obj}"), "heldout": ("poke the {obj}",)}
    expert = f"{__name__}:ToyExpert"

    def sample(self, rng: np.random.Generator, split) -> Scene:
        target = pick(rng, object_pool(split))
        xy = place(rng, [target])[0]
        text = self.instruction(split.phrasing, rng, obj=target.name)
        return Scene([SceneObject(target, "target", xy, random_yaw(rng))], background_for(split, rng), text)

    def success(self, env, scene: Scene) -> tuple[bool, dict]:
        return False, {"touched": False}


@pytest.fixture
def toy():
    # Registered per test, not at import: other test modules parametrize over TASKS when collected.
    register_task(ToyTask)
    yield TASKS["toy_touch"]
    unregister_task("toy_touch")


def test_shipped_families_are_discovered_in_order_with_gym_ids_and_experts():
    assert list(TASKS)[:len(SHIPPED)] == SHIPPED
    for name in SHIPPED:
        task = TASKS[name]
        assert get_task(name) is task and language.TEMPLATES[name] == task.templates
        assert gym.spec(env_id(task)).kwargs == {"task": name}
        assert isinstance(expert_class(task), type)


@pytest.mark.parametrize("key, text", list(RECORDED.items()), ids=["|".join(map(str, k)) for k in RECORDED])
def test_instructions_are_unchanged_by_the_registry(key, text):
    task, split, seed = key
    assert TASKS[task].sample(np.random.default_rng(seed), language.get_split(split)).instruction == text


def test_language_instruction_keeps_its_behaviour():
    rng = np.random.default_rng
    assert language.instruction("pick", "train", rng(0), obj="apple") == "pick the apple up"
    assert language.instruction("pick", "heldout", rng(3), obj="apple") == "get the apple into the air"
    placed = language.instruction("place", "train", rng(5), obj="apple", container="bowl")
    assert placed == "move the apple into the bowl"
    assert language.instruction("category", "train", rng(2), cat="the fruit") == "lift the fruit"
    # The task's own method draws the same template from the same stream.
    assert TASKS["pick"].instruction("heldout", rng(3), obj="apple") == "get the apple into the air"
    with pytest.raises(ValueError, match="no templates for task 'pik'; known: pick, place"):
        language.instruction("pik", "train", rng(0), obj="apple")


def test_toy_family_from_a_test_module_is_a_full_citizen(toy):
    from vlabench.tasks import TASKS as again

    assert again is TASKS and list(TASKS)[-1] == "toy_touch"  # the live dict; order 1000 sorts it last
    assert language.TEMPLATES["toy_touch"]["heldout"] == ("poke the {obj}",)
    assert "toy_touch" in split_table()
    env = gym.make("vlabench/ToyTouch-v0", image_size=16, wrist_size=16)
    obs, info = env.reset(seed=0)
    assert info["task"] == "toy_touch" and obs["instruction"].split(" the ")[0] in ("touch", "tap")
    assert env.unwrapped.scene.by_role("target").spec.name in obs["instruction"]
    made = ToyExpert.made
    assert np.array_equal(env.unwrapped.expert_action(), ToyExpert.ACTION)
    assert ToyExpert.made == made + 1 and type(env.unwrapped._expert) is ToyExpert
    env.close()
    para = gym.make("vlabench/ToyTouch-v0", split="paraphrase", image_size=16, wrist_size=16)
    assert para.reset(seed=0)[0]["instruction"].startswith("poke the ")
    para.close()
    with pytest.raises(ValueError, match="task 'toy_touch' has no split 'unseen_objects'; its splits: seen, para"):
        gym.make("vlabench/ToyTouch-v0", split="unseen_objects")


def test_unregistering_removes_every_trace(toy):
    unregister_task("toy_touch")
    assert "toy_touch" not in TASKS and "toy_touch" not in language.TEMPLATES
    assert "vlabench/ToyTouch-v0" not in gym.registry
    register_task(ToyTask)  # the fixture unregisters it again


def _variant(**attrs) -> type:
    return type("BadToy", (ToyTask,), {"name": "bad_toy", "gym_id": "BadToy", **attrs})


@pytest.mark.parametrize("attrs, match", [
    (dict(splits=("seen", "sen")), r"unknown splits \['sen'\]; valid: seen, unseen_objects"),
    (dict(splits=()), "non-empty tuple of split names"),
    (dict(templates={"train": ("a {obj}",), "heldout": ("a {obj}",)}), r"repeat train templates: \['a \{obj\}'\]"),
    (dict(templates={"train": ("a {obj}",), "heldout": ()}), "'paraphrase' split but no 'heldout' templates"),
    (dict(templates={"train": ("a {obj}",)}), "exactly the keys 'train' and 'heldout'"),
    (dict(templates={"train": (), "heldout": ("b",)}), "at least one train template"),
    (dict(expert="vlabench.experts.grasping.PickExpert"), "must be 'package.module:ClassName'"),
    (dict(name="Bad Toy"), "lower_snake_case"),
    (dict(gym_id="bad-toy"), "CamelCase identifier"),
    (dict(gym_id="Pick"), "gym id 'Pick' of BadToy is already used by task 'pick'"),
    (dict(name="pick", gym_id="Pick2"), "task name 'pick' is already registered by vlabench.tasks.pick.PickTask"),
    (dict(max_steps=0), "max_steps must be a positive int"),
])
def test_bad_declarations_are_refused_naming_the_field(attrs, match):
    with pytest.raises(ValueError, match=match):
        register_task(_variant(**attrs))
    assert "bad_toy" not in TASKS and "bad_toy" not in language.TEMPLATES and "vlabench/BadToy-v0" not in gym.registry
    assert TASKS["pick"].templates == language.TEMPLATES["pick"]


def test_a_subclass_must_name_itself_and_not_be_a_task():
    with pytest.raises(ValueError, match="must set its own 'name'"):
        register_task(type("Nameless", (ToyTask,), {"gym_id": "Nameless"}))
    with pytest.raises(TypeError, match="subclass of vlabench.tasks.task.Task"):
        register_task(dict)


def test_unknown_expert_path_fails_when_the_expert_is_made(toy):
    broken = type("Broken", (), {"name": "toy_touch", "expert": f"{__name__}:NoSuchExpert"})()
    with pytest.raises(ValueError, match="expert '.*:NoSuchExpert' of task 'toy_touch' cannot be imported"):
        expert_class(broken)


def test_split_table_lists_every_family_and_split():
    table = split_table().splitlines()
    assert table[0].startswith("| family | gym id | max steps | seen | unseen_objects")
    assert len(table) == 2 + len(TASKS)
    pad = next(r for r in table if r.startswith("| pad |")).split(" | ")
    assert pad.count("yes") == len(TASKS["pad"].splits) == 7


def test_import_vlabench_alone_registers_quietly_without_env_or_torch():
    code = ("import sys, vlabench, gymnasium as gym\n"
            "loaded = [m for m in ('torch', 'vlabench.env', 'vlabench.experts') if m in sys.modules]\n"
            "env = gym.make('vlabench/Pick-v0', image_size=16, wrist_size=16)\n"
            "print(loaded, env.reset(seed=0)[0]['instruction'])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[] pick up the strawberry\n"  # no pybullet banner either
