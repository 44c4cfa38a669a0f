"""Function length: no function of the package or of the top-level scripts runs over 60 lines,
except the linear orchestrators named in ``ALLOWED`` (and, the same list, in README's module map).

How a function is counted: from its ``def`` line to its last line (``lineno`` to ``end_lineno``
in ``ast``; decorators not included), minus its docstring — documentation is not length. Blank
lines and comments inside count, as a reader has to get past them. Methods and nested functions
are checked on their own, and a nested function's lines also count for the function around it:
that is the length a reader of the outer function faces.
"""

import ast
import pathlib
import re

from conftest import REPO_ROOT

MAX_LINES = 60

# "path:qualified name" → why it may be longer: a linear orchestrator runs a fixed sequence of
# stages top to bottom, and splitting it would scatter that sequence over helpers.
ALLOWED = {
    "evaluate.py:main": "the evaluate command in the order it runs: checks, predictions, the "
                        "report and its optional parts (TTA, fusion, fitted thresholds), files",
    "m2cnn_tf/data/synthetic.py:_photograph": "a camera's image formation in physical order: "
                                              "light, aperture and frame, optics and sensor, "
                                              "tone curve, JPEG",
}


def checked_files():
    """Every module of the package and every top-level script, as paths."""
    return sorted((REPO_ROOT / "m2cnn_tf").rglob("*.py")) + sorted(REPO_ROOT.glob("*.py"))


def _docstring_lines(node) -> int:
    first = node.body[0]
    if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return first.end_lineno - first.lineno + 1
    return 0


def function_lengths(source: str, path: str = "<source>") -> dict:
    """{"path:qualified.name": lines} for every function and method in ``source``."""
    lengths = {}

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                lines = child.end_lineno - child.lineno + 1 - _docstring_lines(child)
                lengths[f"{path}:{name}"] = lines
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return lengths


def all_function_lengths() -> dict:
    lengths = {}
    for path in checked_files():
        relative = path.relative_to(REPO_ROOT).as_posix()
        lengths.update(function_lengths(path.read_text(), relative))
    return lengths


def test_the_count_follows_the_stated_rule():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES - 1))
    source = (f'def fits():\n    """Docstring,\n    not counted."""\n{body}'
              f"def too_long():\n{body}    return x0\n"
              "class Holder:\n    @property\n    def method(self):\n"
              "        def inner():\n            return 1\n        return inner\n")
    lengths = function_lengths(source)
    assert lengths == {"<source>:fits": MAX_LINES, "<source>:too_long": MAX_LINES + 1,
                       "<source>:Holder.method": 4, "<source>:Holder.method.inner": 2}, lengths


def test_no_function_is_longer_than_60_lines():
    lengths = all_function_lengths()
    assert len(lengths) > 500, f"only {len(lengths)} functions found: is the package there?"
    too_long = sorted(((n, name) for name, n in lengths.items()
                       if n > MAX_LINES and name not in ALLOWED), reverse=True)
    assert not too_long, (
        f"functions over {MAX_LINES} lines (docstrings not counted) — split them, or, for a "
        "linear orchestrator, add it with its reason to ALLOWED here and to README's module "
        "map:\n" + "\n".join(f"  {n:4d}  {name}" for n, name in too_long))


def test_every_allowed_orchestrator_exists_and_has_a_reason():
    lengths = all_function_lengths()
    missing = sorted(name for name in ALLOWED if name not in lengths)
    assert not missing, f"ALLOWED names functions that do not exist (renamed?): {missing}"
    assert all(len(reason.split()) >= 5 for reason in ALLOWED.values()), ALLOWED


def test_readme_lists_the_same_orchestrators():
    text = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Module map\n(.*?)(?=^## )", text, re.S | re.M)
    assert section, "README.md has no '## Module map' section"
    listed = set(re.findall(r"`([\w/]+\.py:[\w.]+)`", section.group(1)))
    assert listed == set(ALLOWED), (
        f"README's module map lists {sorted(listed)}; ALLOWED in {pathlib.Path(__file__).name} "
        f"has {sorted(ALLOWED)}")
