"""The package's import graph: no circles, and the media core blind to signaling.

``server/media`` and ``server/audio`` must not import Socket.IO, client dialects
or the server's settings; the signaling side depends on them, never the reverse.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "server"

# Of the rest of the package, the media core and the audio tap may use only these leaves
# (they import nothing of the package themselves); everything else is the signaling side.
SHARED_LEAVES = {"server.validation", "server.tasks"}
FORBIDDEN_THIRD_PARTY = ("socketio", "engineio", "aiohttp")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, type-checking-only imports included."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & modules.keys() for name, path in modules.items()}


def test_the_import_graph_has_no_circle():
    edges = graph()
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module) :], module])
        visiting.append(module)
        for target in sorted(edges[module]):
            if target != module and not module.startswith(target + "."):
                visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(edges):
        visit(module)


@pytest.mark.parametrize("layer", ["server.media", "server.audio"])
def test_the_media_core_and_audio_never_import_signaling(layer: str):
    for path in (PACKAGE / layer.split(".")[1]).rglob("*.py"):
        imported = imports_of(path)
        upward = sorted(
            module
            for module in imported
            if module.startswith("server.")
            and not module.startswith(("server.media", "server.audio"))
            and ".".join(module.split(".")[:2]) not in SHARED_LEAVES
        )
        assert not upward, f"{module_name(path)} imports {upward}"
        third_party = sorted(m for m in imported if m.split(".")[0] in FORBIDDEN_THIRD_PARTY)
        assert not third_party, f"{module_name(path)} imports {third_party}"


def test_the_shared_leaves_import_nothing_of_the_package():
    for leaf in SHARED_LEAVES:
        path = PACKAGE / (leaf.split(".")[1] + ".py")
        assert not [m for m in imports_of(path) if m.startswith("server")], leaf


def test_only_the_hooks_module_touches_aiortc_private_modules():
    private = ("aiortc.sdp", "aiortc.rtcpeerconnection", "aiortc.rtcdtlstransport", "aiortc.clock")
    for path in PACKAGE.rglob("*.py"):
        if path.name == "aiortc_hooks.py":
            continue
        touched = sorted(m for m in imports_of(path) if m.startswith(private))
        assert not touched, f"{module_name(path)} imports {touched}"
