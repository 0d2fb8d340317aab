from streamtrain.cli import SUBCOMMANDS, main


def test_cli_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SUBCOMMANDS)


def test_cli_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_cli_bench_lists_benchmarks_when_none_is_named(capsys):
    assert main(["bench"]) == 2
    err = capsys.readouterr().err
    assert "kafka_roundtrip" in err and "sync_freshness" in err and "common" not in err.split(":")[-1]


def test_cli_bench_outside_a_checkout_says_where_benchmarks_live(capsys, monkeypatch):
    import sys

    monkeypatch.delitem(sys.modules, "bench.cli", raising=False)
    monkeypatch.setitem(sys.modules, "bench", None)  # as if bench/ were not importable
    assert main(["bench", "kafka_roundtrip"]) == 2
    assert "checkout" in capsys.readouterr().err


def test_cli_a_bad_setting_ends_any_subcommand_with_exit_2_and_one_line(capsys, tmp_path):
    """Subcommands that do not report a ConfigError themselves still print one line, no traceback."""
    assert main(["generate", "--set", "generatr.users=5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamtrain generate: generatr.users='5' (--set) is invalid: "
                          "unknown config section 'generatr' (did you mean 'generator'?)")
    assert len(err.strip().splitlines()) == 1
    (tmp_path / "c.toml").write_text("[topics]\npartitions = 1.5\n")
    assert main(["topics", "create", "--config", str(tmp_path / "c.toml")]) == 2
    assert "topics.partitions=1.5" in capsys.readouterr().err
