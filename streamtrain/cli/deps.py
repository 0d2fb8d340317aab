"""``streamtrain deps``: the package dependency graph, drawn from the imports in the source,
and the layering rules it must keep.

Layers, bottom up: ``schemas`` (records and codecs) < the ground (``streamtrain``: config,
Kafka I/O, the local broker, paths, logging, clock) < the stages (``streaming``,
``streaming.features``, ``streaming.joiner``, ``trainer``, ``sync``, ``traffic``) < the
command line (``streamtrain.cli``) and the benchmarks (``bench``). An import may point down
or sideways, never up, and the package graph has no cycle.

    streamtrain deps              # the graph as Mermaid (paste into the README) + rule check
    streamtrain deps --check      # only the check; exit 1 on a violation
    streamtrain deps --readme     # also rewrite the graph between the README's deps markers
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

from streamtrain.paths import REPO_ROOT

NODES = ("schemas", "streamtrain", "streaming", "streaming.features", "streaming.joiner",
         "trainer", "sync", "traffic", "streamtrain.cli", "bench")
BEGIN, END = "<!-- deps:begin -->", "<!-- deps:end -->"
LAYER = {"schemas": 0, "streamtrain": 1, "streaming": 2, "streaming.features": 2, "streaming.joiner": 2,
         "trainer": 2, "sync": 2, "traffic": 2, "streamtrain.cli": 3, "bench": 3}


def node_of(module: str) -> str | None:
    """The graph node a dotted module name belongs to (its longest matching package).

    >>> node_of("streaming.joiner.core"), node_of("streamtrain.cli.demo"), node_of("numpy")
    ('streaming.joiner', 'streamtrain.cli', None)
    """
    best = None
    for node in NODES:
        if (module == node or module.startswith(node + ".")) and (best is None or len(node) > len(best)):
            best = node
    return best


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def edges(root: Path = REPO_ROOT) -> dict[tuple[str, str], set[str]]:
    """(importer node, imported node) -> the importing modules, for every cross-node import."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for top in ("schemas", "streamtrain", "streaming", "trainer", "sync", "traffic", "bench"):
        for path in sorted((root / top).rglob("*.py")):
            module = module_name(path, root)
            src = node_of(module)
            for imported in imports_of(path, module):
                dst = node_of(imported)
                if src and dst and dst != src:
                    found[(src, dst)].add(module)
    return found


def violations(graph: dict[tuple[str, str], set[str]]) -> list[str]:
    """Upward imports and cycles, each as one line naming the modules."""
    out = [f"{src} -> {dst} points up a layer (in {', '.join(sorted(mods))})"
           for (src, dst), mods in sorted(graph.items()) if LAYER[dst] > LAYER[src]]
    out += [f"cycle: {' -> '.join(cycle)}" for cycle in _cycles({pair for pair in graph})]
    return out


def _cycles(pairs: set[tuple[str, str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one node (or a self loop).

    >>> _cycles({("a", "b"), ("b", "a"), ("b", "c")})
    [['a', 'b', 'a']]
    """
    succ: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        succ[a].add(b)
    found = []
    for start in sorted(succ):
        path = _path_back(start, start, succ, [start], set())
        if path and min(path[:-1]) == start:  # report each cycle once, from its smallest node
            found.append(path)
    return found


def _path_back(node: str, target: str, succ: dict[str, set[str]], path: list[str],
               seen: set[str]) -> list[str] | None:
    for nxt in sorted(succ[node]):
        if nxt == target:
            return [*path, nxt]
        if nxt not in seen:
            seen.add(nxt)
            found = _path_back(nxt, target, succ, [*path, nxt], seen)
            if found:
                return found
    return None


def mermaid(graph: dict[tuple[str, str], set[str]]) -> str:
    lines = ["graph TD"]
    lines += [f"  {src.replace('.', '_')}[{src}] --> {dst.replace('.', '_')}[{dst}]"
              for src, dst in sorted(graph)]
    return "\n".join(lines)


def write_readme(path: Path, graph: dict[tuple[str, str], set[str]]) -> None:
    """Replace what stands between ``<!-- deps:begin -->`` and ``<!-- deps:end -->``."""
    text = path.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        raise SystemExit(f"streamtrain deps: {path} has no {BEGIN} ... {END} markers")
    path.write_text(f"{head}{BEGIN}\n```mermaid\n{mermaid(graph)}\n```\n{END}{tail}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="streamtrain deps", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check the rules")
    p.add_argument("--readme", action="store_true", help="rewrite the graph in README.md")
    p.add_argument("--root", type=Path, default=REPO_ROOT, help="checkout to read (default: this one)")
    args = p.parse_args(argv)
    graph = edges(args.root)
    if not args.check:
        print(mermaid(graph))
    if args.readme:
        write_readme(args.root / "README.md", graph)
    bad = violations(graph)
    for line in bad:
        print(f"streamtrain deps: {line}", file=sys.stderr)
    return 1 if bad else 0
