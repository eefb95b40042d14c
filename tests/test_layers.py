"""Imports run one way: no module of argen/ imports a module of a higher layer.

The layers, bottom first, are the table below: data, with one entry per top-level module or package of argen/
(`argen/x.py` and `argen/x/` are both "x"; the package root `argen/__init__.py` is "argen"). A module may import its
own layer and any layer under it. Every import counts, at module level or inside a function (a lazy import is still
a dependency), except those under `if TYPE_CHECKING:`: those never run, so they make no runtime edge and no import
cycle (a contract that must name a higher layer's class should use a Protocol of its own layer instead).

A new top-level module or package must be given a layer here, or `test_every_module_has_a_layer` fails; names may be
listed before they exist (the layout's planned packages), so moving a module into its planned package needs no edit.
docs/architecture.md shows the same table to readers.
"""

import ast
import warnings
from pathlib import Path

import pytest

ARGEN = Path(__file__).resolve().parent.parent / "argen"

LAYERS: list[tuple[str, set[str]]] = [
    # imported by anything, importing only each other; the package root imports nothing at import time (its public
    # names are loaded lazily through importlib, which is no import statement)
    ("infrastructure", {"argen", "errors", "registry", "checkpoint", "release_checks", "dist", "allocator", "onednn"}),
    ("data", {"data"}),
    ("tokenizers", {"tokenizers"}),
    ("orders", {"orders"}),
    ("model", {"model"}),
    ("samplers", {"samplers"}),
    # inference glue and what it serves: Pipeline, the codec package (with its residual model), editing
    ("inference", {"pipeline", "model_directory", "pipeline_output", "codec", "editing"}),
    # measuring: metrics/ holds the features and scores, the evaluation harness (which samples through Pipeline) and
    # the classifier whose features the scores use; above inference because evaluation generates images, below train
    # because the classifier's trainer imports the classifier. PSNR/SSIM, which tokenizers train with, live under
    # tokenizers (tokenizers/losses.py), not here.
    ("metrics", {"metrics"}),
    ("train", {"train"}),
    # reading a trained generator: activations at hook points, SAEs (trained with the shared loop), steering pipelines
    ("interpret", {"interpret"}),
    ("apps", {"apps", "serve", "convert"}),
    ("cli", {"commands", "cli", "__main__"}),
]

# Upward edges on main that other branches are removing, as (importing unit, imported unit). The test reports them
# (a warning in the summary) and fails on any other upward edge; an entry that no longer occurs fails too, so this set
# is emptied as the fixes land.
KNOWN_UPWARD: set[tuple[str, str]] = set()

LAYER_OF = {unit: index for index, (_, units) in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """`argen.x.y` → "x"; `argen` → "argen"."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    parts = path.relative_to(ARGEN.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking_block(node: ast.AST) -> bool:
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_nodes(tree: ast.AST):
    """Every node of the tree except the bodies of `if TYPE_CHECKING:` (their `else:` does run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if is_type_checking_block(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def imported_modules(path: Path) -> set[str]:
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package=package, filename=str(path))


def imports_in(source: str, *, package: str, filename: str = "<source>") -> set[str]:
    """The argen modules `source` (a module of `package`) imports at run time, relative imports resolved;
    `from argen import x` is `argen.x` when x is a module or package, else the package root."""
    found = set()
    for node in runtime_nodes(ast.parse(source, filename=filename)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "argen":
                for alias in node.names:
                    submodule = ARGEN / alias.name
                    exists = submodule.is_dir() or submodule.with_suffix(".py").is_file()
                    found.add(f"argen.{alias.name}" if exists else "argen")
            else:
                found.add(module)
    return {module for module in found if module == "argen" or module.startswith("argen.")}


def argen_files() -> list[Path]:
    return sorted(path for path in ARGEN.rglob("*.py") if "__pycache__" not in path.parts)


def import_edges() -> dict[tuple[str, str], list[str]]:
    """(importing unit, imported unit) → the 'module imports module' lines behind it, for every edge across units."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path in argen_files():
        importer = module_name(path)
        for imported in imported_modules(path):
            edge = (unit_of(importer), unit_of(imported))
            if edge[0] != edge[1]:
                edges.setdefault(edge, []).append(f"{importer} imports {imported}")
    return edges


def upward_edges() -> dict[tuple[str, str], list[str]]:
    return {
        edge: lines
        for edge, lines in import_edges().items()
        if edge[0] in LAYER_OF and edge[1] in LAYER_OF and LAYER_OF[edge[1]] > LAYER_OF[edge[0]]
    }


def test_every_module_has_a_layer():
    units = {unit_of(module_name(path)) for path in argen_files()}
    missing = sorted(units - set(LAYER_OF))
    assert not missing, f"give these top-level modules a layer in tests/test_layers.py LAYERS: {missing}"


def test_the_layer_table_names_each_unit_once():
    names = [unit for _, units in LAYERS for unit in units]
    assert len(names) == len(set(names))


def test_no_import_runs_upward():
    upward = upward_edges()
    known = {edge: lines for edge, lines in upward.items() if edge in KNOWN_UPWARD}
    if known:
        warnings.warn(
            "known upward imports, being removed: " + "; ".join(line for lines in known.values() for line in lines),
            stacklevel=1,
        )
    new = {edge: lines for edge, lines in upward.items() if edge not in KNOWN_UPWARD}
    assert not new, "imports that run upward (move the code down or the import up):\n" + "\n".join(
        f"  {line}  ({LAYERS[LAYER_OF[a]][0]} → {LAYERS[LAYER_OF[b]][0]})"
        for (a, b), lines in new.items()
        for line in lines
    )


def test_known_upward_edges_still_exist():
    stale = KNOWN_UPWARD - set(upward_edges())
    assert not stale, f"these upward imports are gone: remove them from KNOWN_UPWARD in tests/test_layers.py: {stale}"


def test_nothing_in_the_library_imports_the_commands():
    offenders = [
        line
        for (importer, imported), lines in import_edges().items()
        if imported == "commands" and importer not in {"cli", "__main__"}
        for line in lines
    ]
    assert not offenders, offenders


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import argen.samplers.logits\n", {"argen.samplers.logits"}),
        ("def f():\n    from argen.commands import sample\n", {"argen.commands"}),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from argen.pipeline import Pipeline\n", set()),
        ("if TYPE_CHECKING:\n    pass\nelse:\n    import argen.metrics\n", {"argen.metrics"}),
        ("from argen import onednn, __version__\n", {"argen.onednn", "argen"}),
        ("from ..metrics import psnr\n", {"argen.metrics"}),
    ],
)
def test_the_import_walker(source, expected):
    """The walker itself: function-level imports count, TYPE_CHECKING ones do not, relative imports resolve."""
    assert imports_in(source, package="argen.tokenizers") == expected
