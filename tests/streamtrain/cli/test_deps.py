"""The layering rules hold on this checkout, and the checker catches what breaks them."""

from streamtrain.cli.deps import edges, main, violations


def test_deps_this_checkout_has_no_upward_import_and_no_cycle():
    graph = edges()
    assert ("sync", "trainer") in graph  # the graph sees real imports
    assert violations(graph) == []
    assert not [pair for pair in graph if pair[1] == "streamtrain.cli" and pair[0] != "bench"]


def _tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_deps_flags_a_stage_importing_the_cli_and_a_cycle(tmp_path):
    root = _tree(tmp_path, {
        "trainer/__init__.py": "",
        "trainer/cli.py": "from streamtrain.cli import flags\nfrom sync import publisher\n",
        "sync/__init__.py": "",
        "sync/replica.py": "from trainer.model import build\n",
        "streamtrain/cli/__init__.py": "",
    })
    bad = violations(edges(root))
    assert any(line.startswith("trainer -> streamtrain.cli points up") for line in bad)
    assert "cycle: sync -> trainer -> sync" in bad


def test_deps_check_exits_nonzero_on_a_violation(tmp_path, capsys):
    root = _tree(tmp_path, {"schemas/codec.py": "from . import records\nfrom trainer import model\n"})
    assert main(["--check", "--root", str(root)]) == 1
    assert "schemas -> trainer points up" in capsys.readouterr().err


def test_deps_readme_shows_the_current_graph():
    from streamtrain.cli.deps import mermaid
    from streamtrain.paths import REPO_ROOT

    readme = (REPO_ROOT / "README.md").read_text()
    shown = readme.split("<!-- deps:begin -->")[1].split("<!-- deps:end -->")[0]
    assert shown.strip() == f"```mermaid\n{mermaid(edges())}\n```", \
        "README's dependency graph is stale: run `streamtrain deps --readme`"
