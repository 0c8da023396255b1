"""The stage order of docs/ARCHITECTURE.md, checked on every import of the package, at module level or inside a
function: ``io -> data -> preprocessing -> augmentation -> models -> training -> inference -> postprocessing ->
evaluation -> reporting``; a stage imports from itself, lower stages and the base modules only; base modules
import only base modules; the CLI sits above all.  Imports placed inside functions (to keep ``kidneyseg --help``
and torch-free prediction fast) are read like the others, so they cannot hide an upward dependency."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kidneyseg"
STAGES = ("io", "data", "preprocessing", "augmentation", "models", "training", "inference", "postprocessing",
          "evaluation", "reporting")
#: Modules every stage may import; they import only each other.
BASE = ("case", "labels", "errors", "_optional", "default_models")
#: The documented exception (docs/ARCHITECTURE.md, "Known exception"): module -> the higher stage it imports.
EXCEPTIONS = {("inference/predictor.py", "postprocessing")}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every ``kidneyseg`` import in ``path``, wherever it stands."""
    rel = path.relative_to(SRC).parts
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = list(rel[:-1])[: len(rel) - node.level]
                names = [".".join(["kidneyseg", *pkg, *([node.module] if node.module else [])])]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        out += [(node.lineno, n) for n in names if n.startswith("kidneyseg.")]
    return out


def _unit(module: str) -> str:
    """The stage or base module a module name belongs to (``kidneyseg.io.nifti`` -> ``io``)."""
    return module.split(".")[1]


def test_every_import_follows_the_stage_order() -> None:
    bad, seen = [], set()
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own not in STAGES + BASE:
            continue  # cli/, __init__, __main__: above every stage
        seen.add(own)
        for line, module in _imports(path):
            target = _unit(module)
            if own in BASE:
                ok = target in BASE
            elif target in BASE or target == own:
                ok = True
            else:
                ok = target in STAGES and STAGES.index(target) < STAGES.index(own)
            if not ok and (rel.as_posix(), target) not in EXCEPTIONS:
                bad.append(f"{rel}:{line} ({own}) imports {module} ({target})")
    assert seen == set(STAGES + BASE)  # the walk saw every stage and base module
    assert not bad, "imports against the stage order:\n" + "\n".join(bad)


def test_the_documented_exception_still_exists() -> None:
    """The exception list names only what is there: when the predictor stops importing post-processing, the
    entry (and the paragraph in docs/ARCHITECTURE.md) goes."""
    for rel, target in EXCEPTIONS:
        assert target in {_unit(m) for _, m in _imports(SRC / rel)}, (rel, target)
