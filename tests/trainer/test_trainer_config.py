import pytest

from streamtrain.config import ConfigError, load
from trainer.config import ModelConfig, TableConfig, TrainerConfig


@pytest.mark.parametrize("cls,kw,field", [
    (TableConfig, {"admit_prob": 0.0}, "embedding.admit_prob"),
    (TableConfig, {"optimizer": "sgd"}, "embedding.optimizer"),
    (ModelConfig, {"interaction": "mlp"}, "model.interaction"),
    (ModelConfig, {"slots": (1, 1)}, "model.slots"),
    (TrainerConfig, {"neg_sampling": "maybe"}, "trainer.neg_sampling"),
    (TrainerConfig, {"batch_size": 0}, "trainer.batch_size"),
    (TrainerConfig, {"isolation_level": "read_some"}, "trainer.isolation_level"),
    (TrainerConfig, {"history_points": 1}, "trainer.history_points"),
    (TrainerConfig, {"idle_warn_s": -1.0}, "trainer.idle_warn_s"),
])
def test_config_rejects_bad_values_naming_the_field(cls, kw, field):
    with pytest.raises(ConfigError, match=field):
        cls(**kw)


def test_config_loads_tuples_from_overrides():
    m = load(ModelConfig, "model", overrides=["model.heads=click,conversion", "model.slots=3,4"], env={})
    assert m.heads == ("click", "conversion") and m.slots == (3, 4)
    assert ModelConfig.from_dict(m.to_dict()) == m


def test_config_isolation_level_defaults_to_read_committed_and_loads_from_overrides():
    assert TrainerConfig().isolation_level == "read_committed"
    cfg = load(TrainerConfig, "trainer", overrides=["trainer.isolation_level=read_uncommitted"], env={})
    assert cfg.isolation_level == "read_uncommitted"
