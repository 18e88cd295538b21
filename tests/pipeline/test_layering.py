"""`pipeline/` imports nothing from `stages/` (see the `pipeline` package docstring).

Two checks: each runtime module, imported alone in a fresh interpreter, loads no ``stages``
module; and no runtime module has an ``import stages...`` / ``from stages... import``
statement anywhere, functions included, except the wiring module and the CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / "pipeline"

# The wiring: the module that builds stages from the config and the config's composition
# (which takes each stage's own config model); and the commands.
MAY_IMPORT_STAGES = frozenset(
    {"procs", "config.cameras", "config.pipeline", "config.loading", "cli", "run", "config_cli"}
)
MODULES = sorted(
    [p.stem for p in PIPELINE.glob("*.py") if p.stem != "__init__"]
    + ["config"]  # a package: its __init__ and each of its modules
    + [f"config.{p.stem}" for p in (PIPELINE / "config").glob("*.py") if p.stem != "__init__"]
)


def _path_of(module: str) -> Path:
    if module == "config":
        return PIPELINE / "config" / "__init__.py"
    return PIPELINE / (module.replace(".", "/") + ".py")


CORE = [m for m in MODULES if m not in MAY_IMPORT_STAGES]
# The core modules the issue names; a rename must not silently drop one from the check.
NAMED_CORE = {
    "messages", "transport", "shm", "runner", "supervisor", "metrics", "stats", "logs",
    "config", "flags", "batching", "reorder", "policy", "health", "edges", "payloads",
    "redact",
}  # fmt: skip

LOADED_STAGES = (
    "import sys, importlib\n"
    "for name in sys.argv[1:]:\n"
    "    importlib.import_module(name)\n"
    "print(sorted(m for m in sys.modules if m == 'stages' or m.startswith('stages.')))\n"
)


def _stages_loaded_by(*modules: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", LOADED_STAGES, *modules],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return out.stdout.strip()


def test_the_named_core_modules_exist() -> None:
    assert not NAMED_CORE - set(CORE)


# procs is allowed to import stages, but only inside functions: the supervisor imports it.
@pytest.mark.parametrize("module", [*CORE, "procs"])
def test_importing_a_runtime_module_loads_no_stage(module: str) -> None:
    assert _stages_loaded_by(f"pipeline.{module}") == "[]"


def test_the_supervisor_side_loads_no_stage() -> None:
    """The issue's must-show, in one interpreter."""
    names = ["messages", "transport", "shm", "runner", "supervisor"]
    assert _stages_loaded_by(*(f"pipeline.{m}" for m in names)) == "[]"


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (typing-only imports load nothing)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)
    return out


def _stage_imports(path: Path) -> list[str]:
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            if name == "stages" or name.startswith("stages."):
                found.append(f"{path.name}:{node.lineno}: {name}")
    return found


def test_no_core_module_has_a_stage_import_statement() -> None:
    found = [hit for m in CORE for hit in _stage_imports(_path_of(m))]
    assert not found, "pipeline/ must not import stages/ (see pipeline/__init__.py):\n" + "\n".join(
        found
    )


def test_procs_imports_stages_inside_functions_only() -> None:
    tree = ast.parse((PIPELINE / "procs.py").read_text(encoding="utf-8"))
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in top]
    assert not [n for n in names if n and (n == "stages" or n.startswith("stages."))]


COMPOSITION = ("config/cameras.py", "config/pipeline.py", "config/loading.py")


def test_the_config_composition_imports_only_the_stages_config_models() -> None:
    """The composed config takes each stage's own model and nothing else from stages/."""
    found = [hit for rel in COMPOSITION for hit in _stage_imports(PIPELINE / rel)]
    assert found, "the composition should take the stages' config models"
    wrong = [hit for hit in found if not hit.rsplit(": ", 1)[1].endswith(".config")]
    assert not wrong, "only stages.<stage>.config modules:\n" + "\n".join(wrong)


def test_stage_config_models_import_no_stage_code() -> None:
    """A stage's config module is schema only: the config never pulls in stage code."""
    configs = sorted((REPO / "stages").rglob("config.py"))
    assert configs
    found = [hit for path in configs for hit in _stage_imports(path)]
    code = [hit for hit in found if not hit.rsplit(": ", 1)[1].endswith(".config")]
    assert not code, "\n".join(code)
