"""A trainer left on the default model behind a producer of another layout (the feature job
adds a slot and realtime dense values) dead-letters every sample; it says so once, loudly,
with the settings that fit the samples."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from schemas import Sample, codec_for
from trainer import stream
from trainer.batch import BatchBuilder
from trainer.config import ModelConfig


class _Dead:
    def __init__(self) -> None:
        self.sent: list = []

    def send(self, dl) -> None:
        self.sent.append(dl)


def _records(n: int, dense: int) -> list:
    codec = codec_for(Sample)
    return [SimpleNamespace(partition=0, offset=i, value=codec.encode(Sample(
        f"r{i}", 1, 2, 1_000, 1_000, slots=[0, 1, 8], ids=[5, 6, 7], dense=[0.5] * dense)))
        for i in range(n)]


@pytest.mark.parametrize("columnar", [False, True], ids=["record_by_record", "columnar"])
def test_samples_of_another_layout_are_dead_lettered_and_the_fix_is_logged_once(caplog, columnar):
    stream._LAYOUTS_WARNED.clear()
    builder, dead = BatchBuilder(ModelConfig(slots=(0, 1), dense_dim=3)), _Dead()
    reader = stream.columnar_reader(codec_for(Sample)) if columnar else None
    with caplog.at_level(logging.ERROR, logger="trainer.stream"):
        batch = stream.decode_records(_records(4, 7), codec_for(Sample), builder, dead, "samples",
                                      reader)
        stream.decode_records(_records(2, 7), codec_for(Sample), builder, dead, "samples", reader)
    assert len(batch) == 0 and len(dead.sent) == 6
    assert all("dense has 7 values, the model expects 3" in d.reason for d in dead.sent)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "--set model.dense_dim=7 --set model.slots=0,1,8" in errors[0]
    # samples that fit are trained on, and say nothing
    ok = stream.decode_records(_records(3, 3), codec_for(Sample), builder, dead, "samples", reader)
    assert len(ok) == 3 and len(dead.sent) == 6
