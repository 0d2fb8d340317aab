import pytest

from tests.helpers.trainer_models import small_model, small_table, small_trainer
from trainer import checkpoint
from trainer.errors import CheckpointError, TrainerError
from trainer.trainer import Trainer


def test_checkpoint_keeps_newest_and_ignores_partial_files(tmp_path):
    for step in (1, 2, 3):
        checkpoint.save(tmp_path, {"step": step}, step, keep=2)
    (tmp_path / ".ckpt-000000000004.pt.tmp-1").write_bytes(b"half a checkpoint")
    assert [p.name for p in checkpoint.all_checkpoints(tmp_path)] == [
        "ckpt-000000000002.pt", "ckpt-000000000003.pt"]
    assert checkpoint.load(checkpoint.latest(tmp_path)) == {"step": 3}


def test_checkpoint_corrupt_file_raises_checkpoint_error(tmp_path):
    bad = tmp_path / "ckpt-000000000001.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        checkpoint.load(bad)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    t = Trainer(small_model(), small_table(), small_trainer(checkpoint_dir=str(tmp_path)))
    t.step = 1
    t.save_checkpoint()
    other = Trainer(small_model(hidden=(16,)), small_table(), small_trainer(checkpoint_dir=str(tmp_path)))
    with pytest.raises(CheckpointError, match="does not match"):
        other.restore_latest()
    assert isinstance(CheckpointError("x"), TrainerError)
