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
