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
