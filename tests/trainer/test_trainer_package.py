"""Package rule: trainer/ never imports sync/ (sync reads a trainer through
``sync.source.ModelSource``)."""

import ast
from pathlib import Path

import trainer


def test_trainer_package_does_not_import_sync():
    offenders = []
    for path in sorted(Path(trainer.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            offenders += [f"{path.name}: {n}" for n in names if n == "sync" or n.startswith("sync.")]
    assert offenders == []


def test_trainer_stream_imports_without_torch_for_spawned_prefetch_processes():
    """A prefetch process (spawned) imports trainer.stream to decode; torch, ~2 s of its
    start-up, loads only where a torch-backed name of the package is used."""
    import subprocess
    import sys

    code = ("import sys, trainer.stream; assert 'torch' not in sys.modules, 'torch imported'; "
            "from trainer import Trainer, TABLE_NAME; assert 'torch' in sys.modules; print(TABLE_NAME)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(trainer.__file__).parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "emb"
