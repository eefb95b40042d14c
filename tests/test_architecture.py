"""docs/architecture.md names every top-level module and package of argen/, and nothing that is not there."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "architecture.md"


def documented() -> list[str]:
    """The entries of the page's "## Modules" list: `name.py` for a module, `name/` for a package."""
    text = PAGE.read_text()
    section = text.split("\n## Modules\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^- `([\w.]+/?)`", section, flags=re.MULTILINE)


def in_the_tree() -> set[str]:
    argen = ROOT / "argen"
    modules = {path.name for path in argen.glob("*.py")}
    packages = {f"{path.name}/" for path in argen.iterdir() if path.is_dir() and any(path.glob("*.py"))}
    return modules | packages


def test_every_module_and_package_is_on_the_architecture_page():
    missing = sorted(in_the_tree() - set(documented()))
    assert not missing, f"add a line for each to the Modules list of docs/architecture.md: {missing}"


def test_the_architecture_page_names_only_what_exists():
    names = documented()
    assert len(names) == len(set(names)), "a module is listed twice"
    stale = sorted(set(names) - in_the_tree())
    assert not stale, f"docs/architecture.md lists what argen/ does not have (moved or removed?): {stale}"
