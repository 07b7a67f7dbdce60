"""One config mechanism: dataclass defaults, YAML that names changes, CLI overrides, strict keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from weatherens import config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_yaml_and_overrides_compose(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("name: exp\nworld: {years: 2, resolution: T21}\ndata: {levels: [500]}\n")
    exp = config.load(path, ["world.years=3", "data.train={start: '2001-01-01', end: '2001-06-30'}"])
    assert exp.name == "exp"
    assert exp.world.years == 3.0 and isinstance(exp.world.years, float)
    assert exp.world.resolution == "T21" and exp.world.layers == config.WorldConfig().layers
    assert exp.data.levels == (500,)
    assert exp.data.train == config.TimeRange("2001-01-01", "2001-06-30")


@pytest.mark.parametrize(
    "override, message",
    [
        ("world.yeras=2", r"world: unknown key\(s\) \['yeras'\]"),
        ("data.batch_size=big", r"data.batch_size: expected int, got 'big'"),
        ("data.batch_size=true", r"data.batch_size: expected int, got True"),
        ("data.train=5", r"data.train: expected a mapping"),
        ("world", r"expected section.key=value"),
        ("train.member_shards=3", r"train.member_shards.*must be >= 1 and divide train.members"),
        ("train.lat_shards=0", r"train.lat_shards.*must be >= 1"),
    ],
)
def test_bad_keys_and_types_are_refused(override, message):
    with pytest.raises(config.ConfigError, match=message):
        config.load(None, [override])


def test_to_dict_round_trips_and_is_type_stable(tmp_path):
    exp = config.load(None, ["world.spinup_days=2"])
    text = yaml.safe_dump(config.to_dict(exp))
    path = tmp_path / "round.yaml"
    path.write_text(text)
    assert config.load(path) == exp
    # an int given for a float field serialises as the float YAML would load
    assert config.to_dict(config.WorldConfig(spinup_days=2)) == config.to_dict(config.WorldConfig(spinup_days=2.0))


def test_a_partial_nested_section_keeps_the_other_defaults():
    exp = config.load(None, ["data.train.end=2000-02-01"])
    assert exp.data.train.start == config.DataConfig().train.start
    assert exp.data.train.end == "2000-02-01"
    assert config.load(None, ["train.learning_rate=3e-3"]).train.learning_rate == 0.003  # YAML 1.1 reads a string


def test_extends_merges_sections_key_by_key_and_overrides_win(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nworld: {years: 2, resolution: T21}\ntrain: {steps: 7}\n")
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text("extends: ../base.yaml\nname: child\nworld: {seed: 3}\n")
    exp = config.load(child, ["world.years=4"])
    assert exp.name == "child" and exp.train.steps == 7
    assert (exp.world.years, exp.world.resolution, exp.world.seed) == (4.0, "T21", 3)
    # the shipped configs: tiny is quick's world and splits with its own channels
    tiny, quick = config.load(CONFIGS / "tiny.yaml"), config.load(CONFIGS / "quick.yaml")
    assert tiny.world == quick.world and tiny.data.train == quick.data.train and tiny.data.levels == (500, 850)


def test_extends_refuses_cycles_and_missing_files(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(config.ConfigError, match="makes a cycle"):
        config.load(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(config.ConfigError, match=r"c.yaml: 'extends: nowhere.yaml' names a file that does not exist"):
        config.load(tmp_path / "c.yaml")
