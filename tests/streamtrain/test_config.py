from dataclasses import dataclass

import pytest

from streamtrain.config import ConfigError, check, load


@dataclass(frozen=True)
class DemoConfig:
    rate: float = 1.0
    name: str = "x"
    enabled: bool = False
    tags: tuple[str, ...] = ()
    limit: int | None = None

    def __post_init__(self):
        check(self.rate > 0, "demo.rate", self.rate, "> 0")


def test_config_precedence_defaults_file_env_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[demo]\nrate = 2\nname = "file"\ntags = ["a", "b"]\n')
    env = {"STREAMTRAIN_DEMO__NAME": "env", "STREAMTRAIN_DEMO__ENABLED": "true"}
    cfg = load(DemoConfig, "demo", path=f, overrides=["demo.rate=3.5", "other.x=1"], env=env)
    assert cfg == DemoConfig(rate=3.5, name="env", enabled=True, tags=("a", "b"))
    assert load(DemoConfig, "demo", env={}) == DemoConfig()
    assert load(DemoConfig, "demo", overrides=["demo.limit=7", "demo.tags=x,y"], env={}).limit == 7


def test_config_unknown_field_is_an_error_naming_it():
    with pytest.raises(ConfigError, match="demo.rat is not a setting"):
        load(DemoConfig, "demo", overrides=["demo.rat=2"], env={})


def test_config_bad_values_name_field_value_and_allowed():
    with pytest.raises(ConfigError, match=r"demo.rate=-1.0 is invalid: > 0"):
        load(DemoConfig, "demo", overrides=["demo.rate=-1"], env={})
    with pytest.raises(ConfigError, match="expected float"):
        load(DemoConfig, "demo", overrides=["demo.rate=fast"], env={})
    with pytest.raises(ConfigError, match="section.field=value"):
        load(DemoConfig, "demo", overrides=["rate=2"], env={})


def test_config_missing_or_broken_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load(DemoConfig, "demo", path=tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[demo\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(DemoConfig, "demo", path=bad)
