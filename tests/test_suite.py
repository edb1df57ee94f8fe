"""Suite files: every [env] option is checked (type and range) when the suite loads, naming file:line:field."""

import re

import pytest

from vlabench.suite import (
    IMAGE_SIZES,
    SuiteError,
    check_env_options,
    env_option_error,
    load_suite,
)

HEAD = 'name = "x"\nkind = "eval"\nseed_range = [1000000, 1000010]\nepisodes_per_cell = 1\n[env]\nimage_size = 64\n'
CELLS = '[[cells]]\ntask = "pick"\nsplits = ["seen"]\n'


def _write(tmp_path, env_line: str):
    path = tmp_path / "s.toml"
    path.write_text(HEAD + env_line + "\n" + CELLS)
    return path


@pytest.mark.parametrize("env_line, field, why", [
    ("wrist_size = 0", "wrist_size", r"integer in \[16, 512\], got 0"),
    ("wrist_size = 10000", "wrist_size", r"integer in \[16, 512\], got 10000"),
    ("wrist_size = 64.0", "wrist_size", "integer"),
    ("wrist_size = true", "wrist_size", "integer"),
    ('renderer = "foo"', "renderer", "one of tiny, egl, got 'foo'"),
    ("max_steps = -5", "max_steps", "integer >= 1, got -5"),
    ("max_steps = 0", "max_steps", "integer >= 1"),
    ('max_steps = "100"', "max_steps", "integer >= 1"),
    ('depth = "yes"', "depth", "true or false"),
    ("segmentation = 1", "segmentation", "true or false"),
    ('objects = "red ball"', "objects", "non-empty list"),
    ("objects = []", "objects", "non-empty list"),
    ("distractors = 2", "distractors", "lo <= hi"),
    ("colour = 3", "colour", "unknown env option 'colour'"),
])
def test_bad_env_values_are_refused_with_file_line_field(tmp_path, env_line, field, why):
    path = _write(tmp_path, env_line)
    with pytest.raises(SuiteError) as e:
        load_suite(path)
    # the bad line is line 7: after the 4 header lines, [env] and image_size
    assert re.search(rf"^{re.escape(str(path))}:7: .*{field}.*{why}", str(e.value)), str(e.value)


def test_image_size_zero_names_its_own_line(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(HEAD.replace("image_size = 64", "image_size = 0") + CELLS)
    with pytest.raises(SuiteError, match=rf"{re.escape(str(path))}:6: \[env\] field 'image_size': .*got 0"):
        load_suite(path)


@pytest.mark.parametrize("env_line", ['renderer = "egl"', "max_steps = 1", "depth = true", "segmentation = false",
                                      "wrist_size = 16", "wrist_size = 512", 'objects = ["red ball"]',
                                      "distractors = [0, 2]", "front_fov = 35"])
def test_good_env_values_load(tmp_path, env_line):
    suite = load_suite(_write(tmp_path, env_line))
    key = env_line.split(" = ")[0]
    assert key in suite.env_kwargs and len(suite.episodes) == 1


def test_shipped_suites_load():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("envs/*.toml")):
        assert load_suite(path).episodes, path


def test_check_env_options_names_the_source_and_the_range():
    with pytest.raises(ValueError, match=r"--image-size image_size=10000: image_size must be an integer in \[16, 512\]"):
        check_env_options({"image_size": 10000}, source="--image-size")
    check_env_options({"image_size": 16, "renderer": "tiny", "max_steps": 3})
    assert env_option_error("image_size", 128) is None


def test_image_size_range_matches_the_env():
    from vlabench.env import MAX_IMAGE_SIZE, TabletopEnv

    assert IMAGE_SIZES[1] == MAX_IMAGE_SIZE
    for bad in (IMAGE_SIZES[0] - 1, IMAGE_SIZES[1] + 1):  # what the suite refuses, the env refuses too
        with pytest.raises(ValueError, match="image_size"):
            TabletopEnv("pick", image_size=bad)
