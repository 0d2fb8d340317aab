import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from streamtrain.config import SECTIONS, ConfigError, check, load
from streamtrain.paths import REPO_ROOT


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
    cfg = load(DemoConfig, "demo", path=f, overrides=["demo.rate=3.5", "kafka.bootstrap=h:1"], env=env)
    assert cfg == DemoConfig(rate=3.5, name="env", enabled=True, tags=("a", "b"))
    assert load(DemoConfig, "demo", env={}) == DemoConfig()
    assert load(DemoConfig, "demo", overrides=["demo.limit=7", "demo.tags=x,y"], env={}).limit == 7


def test_config_errors_mask_the_value_of_a_setting_named_like_a_secret():
    from streamtrain.kafka_io import KafkaConfig
    with pytest.raises(ConfigError, match="sasl_password is not a setting") as err:
        load(KafkaConfig, "kafka", overrides=["kafka.sasl_password=hunter2"], env={})
    assert "hunter2" not in str(err.value) and "'***'" in str(err.value)
    with pytest.raises(ConfigError, match="unknown config section 'kafak'") as err:
        load(KafkaConfig, "kafka", overrides=["kafak.sasl_password=hunter2"], env={})
    assert "hunter2" not in str(err.value)


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



# ---- unknown sections ----------------------------------------------------------------------

@pytest.mark.parametrize("how", ["--set", "env", "toml"])
def test_config_unknown_section_is_an_error_naming_key_value_and_closest_section(tmp_path, how):
    f = tmp_path / "c.toml"
    f.write_text('[trainr]\nbatch_size = 5\n' if how == "toml" else "")
    env = {"STREAMTRAIN_TRAINR__BATCH_SIZE": "5"} if how == "env" else {}
    overrides = ["trainr.batch_size=5"] if how == "--set" else []
    with pytest.raises(ConfigError) as err:
        load(DemoConfig, "demo", path=f, overrides=overrides, env=env)
    msg = str(err.value)
    assert msg.startswith("trainr.batch_size=") and "5" in msg.split(" ")[0]
    assert "unknown config section 'trainr' (did you mean 'trainer'?)" in msg
    assert "sections: demo, embedding" in msg
    assert {"--set": "(--set)", "env": "STREAMTRAIN_TRAINR__BATCH_SIZE",
            "toml": f"[trainr] in config file {f}"}[how] in msg


def test_config_sections_this_command_does_not_load_are_allowed(tmp_path):
    """One config file serves every command: another command's section is no error."""
    f = tmp_path / "c.toml"
    f.write_text('[trainer]\nbatch_size = 5\n[demo]\nname = "f"\n')
    env = {"STREAMTRAIN_JOINER__WINDOW_MS": "5", "STREAMTRAIN_STATE_DIR": "/x", "STREAMTRAIN_JARS_DIR": "/y"}
    cfg = load(DemoConfig, "demo", path=f, overrides=["kafka.bootstrap=h:1"], env=env)
    assert cfg == DemoConfig(name="f")


def test_config_a_key_outside_any_section_is_an_error(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('batch_size = 5\n[demo]\nname = "f"\n')
    with pytest.raises(ConfigError, match=r"batch_size=5 \(config file .*\) is invalid: settings go in a \[section\]"):
        load(DemoConfig, "demo", path=f, env={})


# ---- types of TOML values ------------------------------------------------------------------

@pytest.mark.parametrize("toml, key, allowed", [
    ('batch_size = "big"', "trainer.batch_size='big'", "expected int, got string"),
    ('batch_size = 1.5', "trainer.batch_size=1.5", "expected int, got float"),
    ('batch_size = "512"', "trainer.batch_size='512'", "expected int, got string"),
    ('batch_size = true', "trainer.batch_size=True", "expected int, got boolean"),
    ('device = 3', "trainer.device=3", "expected str, got integer"),
    ('dense_lr = "fast"', "trainer.dense_lr='fast'", "expected float, got string"),
])
def test_config_toml_value_of_the_wrong_type_is_an_error(tmp_path, toml, key, allowed):
    from trainer.config import TrainerConfig

    f = tmp_path / "c.toml"
    f.write_text(f"[trainer]\n{toml}\n")
    with pytest.raises(ConfigError) as err:
        load(TrainerConfig, "trainer", path=f, env={})
    assert str(err.value) == f"{key} (config file {f}) is invalid: {allowed}"


@pytest.mark.parametrize("toml, allowed", [
    ('slots = "1,2"', "expected a list of int, got string"),
    ('slots = [1, "x"]', "expected a list of int, got array"),
    ('slots = [1, 2.5]', "expected a list of int, got array"),
    ('heads = "click"', "expected a list of str, got string"),
    ('heads = ["click", 1]', "expected a list of str, got array"),
])
def test_config_toml_list_fields_need_a_list_of_the_item_type(tmp_path, toml, allowed):
    from trainer.config import ModelConfig

    f = tmp_path / "c.toml"
    f.write_text(f"[model]\n{toml}\n")
    with pytest.raises(ConfigError, match=rf"^model\.(slots|heads)=.* \(config file .*\) is invalid: {allowed}$"):
        load(ModelConfig, "model", path=f, env={})


def test_config_toml_bool_and_optional_fields_are_checked(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[demo]\nenabled = 1\n')
    with pytest.raises(ConfigError, match=r"demo.enabled=1 .* is invalid: expected true or false, got integer"):
        load(DemoConfig, "demo", path=f, env={})
    f.write_text('[demo]\nlimit = "7"\n')
    with pytest.raises(ConfigError, match=r"demo.limit='7' .* is invalid: expected int or none, got string"):
        load(DemoConfig, "demo", path=f, env={})


def test_config_literal_fields_name_the_allowed_values(tmp_path):
    from typing import Literal

    @dataclass(frozen=True)
    class Mode:
        mode: Literal["thread", "process"] = "thread"

    f = tmp_path / "c.toml"
    f.write_text('[flink]\nmode = "threads"\n')
    with pytest.raises(ConfigError, match=r"flink.mode='threads' .* is invalid: expected one of 'thread' \| 'process'"):
        load(Mode, "flink", path=f, env={})
    with pytest.raises(ConfigError, match=r"flink.mode='x' is invalid: expected one of 'thread' \| 'process'"):
        load(Mode, "flink", overrides=["flink.mode=x"], env={})
    assert load(Mode, "flink", overrides=["flink.mode=process"], env={}).mode == "process"


def test_config_toml_conversions_kept_int_to_float_and_array_to_tuple(tmp_path):
    from trainer.config import ModelConfig, TrainerConfig

    f = tmp_path / "c.toml"
    f.write_text('[trainer]\ndense_lr = 1\nbatch_size = 64\n[model]\nslots = [0, 3]\nheads = ["click"]\n')
    assert load(TrainerConfig, "trainer", path=f, env={}).dense_lr == 1.0
    model = load(ModelConfig, "model", path=f, env={})
    assert model.slots == (0, 3) and model.heads == ("click",)
    # strings from the environment and --set are still converted
    env = {"STREAMTRAIN_MODEL__SLOTS": "1,2"}
    assert load(ModelConfig, "model", path=f, env=env, overrides=["model.heads=a,b"]).slots == (1, 2)


# ---- the declared list of sections = the sections the code loads ---------------------------

SOURCE_PACKAGES = ("schemas", "streamtrain", "streaming", "trainer", "sync", "traffic", "bench")


def _loaded_sections() -> dict[str, set[tuple[str, str]]]:
    """section -> {(class name, file)} for every ``load(..., Cls, "section")`` call in the source:
    ``flags.load(args, Cls, "s")`` and ``config.load(Cls, "s", ...)``."""
    found: dict[str, set[tuple[str, str]]] = {}
    for top in SOURCE_PACKAGES:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call):
                    continue
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
                if name != "load":
                    continue
                args = list(node.args)
                section = next((kw.value for kw in node.keywords if kw.arg == "section"), None)
                for i, arg in enumerate(args):
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and i > 0:
                        section, cls = arg, args[i - 1]
                        break
                else:
                    cls = next((kw.value for kw in node.keywords if kw.arg == "cls"), None)
                if isinstance(section, ast.Constant) and isinstance(cls, ast.Name):
                    rel = str(path.relative_to(REPO_ROOT))
                    found.setdefault(section.value, set()).add((cls.id, rel))
    return found


def test_config_sections_list_equals_the_sections_the_code_loads():
    loaded = _loaded_sections()
    assert {"kafka", "topics", "trainer", "demo", "joiner_job"} <= set(loaded)  # the scan works
    missing = sorted(set(loaded) - set(SECTIONS))
    unused = sorted(set(SECTIONS) - set(loaded))
    assert not missing, f"sections loaded in the code but not in streamtrain.config.SECTIONS: {missing}"
    assert not unused, f"streamtrain.config.SECTIONS lists sections nothing loads: {unused}"


def test_config_sections_list_names_the_class_each_section_is_loaded_with():
    for section, uses in _loaded_sections().items():
        module, _, cls = SECTIONS[section].rpartition(".")
        assert {c for c, _ in uses} == {cls}, f"[{section}] loaded as {uses}, declared {SECTIONS[section]}"
        path = REPO_ROOT / Path(*module.split("."))
        src = (path / "__init__.py" if path.is_dir() else path.with_suffix(".py")).read_text()
        assert any(isinstance(n, ast.ClassDef) and n.name == cls for n in ast.parse(src).body), SECTIONS[section]


def test_config_every_declared_section_is_a_dataclass_loadable_with_defaults():
    pytest.importorskip("pyflink")  # two job configs live in the Flink job modules
    for section, dotted in SECTIONS.items():
        module, _, name = dotted.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        assert load(cls, section, env={}) == cls(), section
