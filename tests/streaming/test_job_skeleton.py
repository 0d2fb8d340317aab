"""The job skeleton without a cluster: flags and settings of every job, and one run of
``FlinkJob.main`` with the environment and the topic creation stubbed out."""

from __future__ import annotations

import pytest

from streaming import flink_env, job_skeleton, passthrough_job
from streaming.features import job as features_job
from streaming.job_skeleton import FlinkJob, JobRun
from streaming.joiner import job as joiner_job
from streamtrain.config import ConfigError
from streamtrain.flags import load


def test_every_job_has_the_common_flags_and_its_own():
    for job, own in ((joiner_job.JOB, ["--restore", "latest"]), (features_job.JOB, []),
                     (passthrough_job.JOB, ["--input", "a", "--output", "b", "--record-type", "action"])):
        run = job.load(["--bounded", "--no-jar", "--set", "kafka.bootstrap=h:1",
                        "--set", "flink.parallelism=2", *own])
        assert run.args.bounded and run.args.no_jar
        assert run.kafka.bootstrap == "h:1" and run.flink.parallelism == 2


def test_joiner_flags_and_sections():
    run = joiner_job.JOB.load(["--restore", "/chk/1", "--set", "joiner.policy=early",
                               "--set", "joiner_job.delivery=exactly_once"])
    assert run["joiner_job"].restore == "/chk/1" and run["joiner_job"].delivery == "exactly_once"
    assert run["joiner"].policy == "early" and run.name == "streamtrain-joiner"
    with pytest.raises(ConfigError, match="joiner_job.buckets"):
        joiner_job.JOB.load(["--set", "joiner_job.buckets=2", "--set", "flink.parallelism=4"])
    with pytest.raises(ConfigError, match="joiner.policy"):
        joiner_job.JOB.load(["--set", "joiner.policy=never"])
    with pytest.raises(ConfigError, match="joiner_job.start"):
        joiner_job.JOB.load(["--set", "joiner_job.start=yesterday"])


def test_features_sections():
    run = features_job.JOB.load(["--set", "features.action_types=cart,fav,buy",
                                 "--set", "features.ctr_action=buy",
                                 "--set", "features_job.start=earliest"])
    assert run["features"].action_types == ("cart", "fav", "buy")
    assert run["features_job"].start == "earliest" and run.name == "streamtrain-features"


def test_passthrough_defaults_follow_the_topics():
    run = passthrough_job.JOB.load(["--set", "topics.impressions=imps"])
    assert (run.args.input, run.args.output) == ("imps", "imps.checked")
    assert run.name == "streamtrain-passthrough-imps"
    assert passthrough_job.JOB.extra_topics(run) == ["imps.checked"]


class _Env:
    def __init__(self):
        self.executed = None

    def execute(self, name):
        self.executed = name


def test_main_creates_topics_builds_with_the_operators_and_executes(monkeypatch):
    calls = {}
    env = _Env()

    def make_env(flink, with_jar=True, extra=None):
        calls["env"] = (flink.parallelism, with_jar, extra)
        return env

    monkeypatch.setattr(job_skeleton, "make_env", make_env)
    monkeypatch.setattr(job_skeleton, "create_topics",
                        lambda kafka, topics, extra=(): calls.setdefault("topics", list(extra)))

    def build(env_, run: JobRun, **operators):
        calls["build"] = (env_, run.args.bounded, run["x"], operators)

    job = FlinkJob(command="demo", label="demo", description="d", build=build,
                   sections=lambda args: {"joiner": load(args, joiner_job.JoinerConfig, "joiner")},
                   prepare=lambda run: run.sections.update(x=run["joiner"].window_ms),
                   flink_settings=lambda run: {"k": "v"}, extra_topics=lambda run: ["t"])
    assert job.main(["--bounded", "--no-jar", "--set", "joiner.window_ms=5"], variant="bare",
                    op="forward") == 0
    assert calls["topics"] == ["t"]
    assert calls["env"] == (1, False, {"k": "v"})
    assert calls["build"] == (env, True, 5, {"op": "forward"})
    assert env.executed == "streamtrain-demo-bare"


def test_durable_state_restore_flag_and_checkpoint_settings(tmp_path):
    """The jobs with durable state (joiner, features) share ``--restore`` and the checkpoint
    settings; ``latest`` is the newest completed checkpoint in the directory, if any."""
    chk = tmp_path / "chk"
    run = features_job.JOB.load(["--restore", "latest", "--set", f"features_job.checkpoint_dir={chk}",
                                 "--set", "features_job.max_restarts=0"])
    assert run["features_job"].restore == "latest"
    settings = features_job.JOB.settings(run)
    assert settings["execution.checkpointing.dir"] == chk.resolve().as_uri()
    assert settings["execution.checkpointing.externalized-checkpoint-retention"] == "RETAIN_ON_CANCELLATION"
    assert settings["execution.checkpointing.num-retained"] == "3"
    assert settings["restart-strategy.type"] == "none"
    assert "execution.state-recovery.path" not in settings  # nothing to restore yet: fresh start
    for n in (3, 4):  # chk-5 was triggered, never completed (no _metadata)
        (chk / "job-a" / f"chk-{n}").mkdir(parents=True)
        (chk / "job-a" / f"chk-{n}" / "_metadata").write_bytes(b"")
    (chk / "job-a" / "chk-5").mkdir()
    assert flink_env.latest_checkpoint(chk) == chk / "job-a" / "chk-4"
    assert features_job.JOB.settings(run)["execution.state-recovery.path"] == str(chk / "job-a" / "chk-4")
    run = features_job.JOB.load(["--restore", "/chk/1"])
    assert features_job.JOB.settings(run)["execution.state-recovery.path"] == "/chk/1"
    assert "restart-strategy.type" not in features_job.JOB.settings(run)  # Flink's default
    assert run["features_job"].checkpoint_dir.endswith("features-checkpoints")
    joined = joiner_job.JOB.load(["--restore", "/chk/2"])
    assert joiner_job.JOB.settings(joined) == joiner_job.flink_settings(joined["joiner_job"])
    assert joiner_job.JOB.settings(joined)["execution.state-recovery.path"] == "/chk/2"
    assert features_job.JOB.load([])["features_job"].restore == ""
    with pytest.raises(SystemExit):  # a job without durable state has no --restore
        passthrough_job.JOB.load(["--restore", "latest"])
    with pytest.raises(ConfigError, match="features_job.state_backend"):
        features_job.JOB.load(["--set", "features_job.state_backend=memory"])
