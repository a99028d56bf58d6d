"""The packages of nea/ import one another only downwards, as docs/architecture.rst
draws them: every ``nea.X`` import of every module, function-level ones included,
is checked against `ALLOWED`."""

import ast
from pathlib import Path

from twisted.trial import unittest

import nea

ROOT = Path(nea.__file__).resolve().parent.parent

#: What each package of nea/ may import from the others (itself and the root ``nea``,
#: which holds only the version, always). Keep docs/architecture.rst in step.
ALLOWED: dict[str, frozenset[str]] = {
    "wire": frozenset(),
    "tls": frozenset(),
    "net": frozenset({"tls"}),
    "store": frozenset({"wire"}),
    "core": frozenset({"wire"}),
    "cluster": frozenset({"core", "net", "wire"}),
    "http": frozenset({"core", "net", "wire"}),
    "server": frozenset({"cluster", "core", "http", "net", "store", "tls", "wire"}),
    "client": frozenset({"tls", "wire"}),
    "loadtest": frozenset({"client", "tls", "wire"}),
}

#: TEMPORARY: (importing module, imported module) pairs tolerated until they are
#: fixed; an entry that no longer occurs fails the test, so the list only shrinks.
#: Delete the list once it is empty. None today.
TOLERATED: frozenset[tuple[str, str]] = frozenset()


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """The ``nea`` modules ``source`` (the text of ``module``) imports, wherever it does."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                base = ".".join(filter(None, [*package[: len(package) - node.level + 1], base]))
            # ``from nea import wire`` imports a package; ``from nea.x import name`` a module.
            found.update(f"{base}.{alias.name}" if base == "nea" else base for alias in node.names)
    return {name for name in found if name == "nea" or name.startswith("nea.")}


def import_map(root: Path) -> dict[str, set[str]]:
    """Every module below ``root`` (the ``nea`` package directory) and what it imports."""
    imports = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        imports[module] = imports_of(path.read_text(), module, is_package)
    return imports


def _package(module: str) -> str | None:
    """``nea.http.site`` -> ``http``; None for the root ``nea``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(
    imports: dict[str, set[str]],
    allowed: dict[str, frozenset[str]],
    tolerated: frozenset[tuple[str, str]] = frozenset(),
) -> list[str]:
    """One line per import the layering forbids, and per tolerated pair that no longer occurs."""
    found = []
    seen = set()
    for module, targets in sorted(imports.items()):
        here = _package(module)
        for target in sorted(targets):
            there = _package(target)
            if there is None or there == here:
                continue
            seen.add((module, target))
            if here not in allowed:
                found.append(f"{module}: package {here!r} has no row in ALLOWED")
            elif there not in allowed[here] and (module, target) not in tolerated:
                may = ", ".join(sorted(allowed[here])) or "nothing"
                found.append(f"{module} imports {target}; {here} may import: {may}")
    found.extend(
        f"tolerated {module} -> {target} no longer occurs: drop it from TOLERATED"
        for module, target in sorted(tolerated - seen)
    )
    return found


def cycle(allowed: dict[str, frozenset[str]]) -> list[str] | None:
    """A cycle among the packages ``allowed`` lets import one another, or None."""
    done: set[str] = set()

    def visit(package: str, path: list[str]) -> list[str] | None:
        if package in path:
            return path[path.index(package) :] + [package]
        if package in done:
            return None
        for below in sorted(allowed.get(package, ())):
            found = visit(below, path + [package])
            if found:
                return found
        done.add(package)
        return None

    for package in sorted(allowed):
        found = visit(package, [])
        if found:
            return found
    return None


#: The hub's parts: only nea.core may touch them; everyone else reads a snapshot.
HUB_PARTS = frozenset({"registry", "relays", "addressed", "chat", "dates"})


def reaches_into_the_hub(source: str) -> list[int]:
    """Lines of ``source`` that read ``<something>.hub.<part>`` or ``hub.<part>``."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in HUB_PARTS:
            owner = node.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if name == "hub":
                lines.append(node.lineno)
    return sorted(lines)


class LayeringTests(unittest.TestCase):
    def test_nothing_outside_the_core_reaches_into_the_hub(self):
        root = Path(nea.__file__).parent
        found = {
            str(path.relative_to(root.parent)): lines
            for path in sorted(root.rglob("*.py"))
            if path.parent.name != "core"
            for lines in [reaches_into_the_hub(path.read_text())]
            if lines
        }
        self.assertEqual(found, {})

    def test_the_hub_check_can_fail(self):
        source = "x = self.hub.registry.peers\ny = hub.relays\nz = self.hub.snapshot()\n"
        self.assertEqual(reaches_into_the_hub(source), [1, 2])

    def test_nea_follows_the_layering(self):
        imports = import_map(Path(nea.__file__).parent)
        self.assertIn("nea.server.service", imports)  # the walk found the tree
        self.assertEqual(violations(imports, ALLOWED, TOLERATED), [])

    def test_the_layering_has_no_cycle(self):
        self.assertIsNone(cycle(ALLOWED))

    def test_every_package_has_a_row(self):
        root = Path(nea.__file__).parent
        packages = {p.parent.name for p in root.glob("*/__init__.py")}
        self.assertEqual(packages, set(ALLOWED))

    def test_the_readme_and_the_architecture_list_every_package(self):
        readme = (ROOT / "README.rst").read_text()
        architecture = (ROOT / "docs" / "architecture.rst").read_text()
        for package in ALLOWED:
            self.assertIn(f"``nea/{package}/``", readme, "README.rst's layout table")
            self.assertIn(f"``nea.{package}``", architecture, "docs/architecture.rst's table")


class CheckerTests(unittest.TestCase):
    """The checker itself, on made-up import maps: it must be able to fail."""

    def test_an_upward_import_is_a_violation(self):
        imports = {"nea.core.hub": {"nea.wire.frames", "nea.server.connection", "nea.core.bus"}}
        self.assertEqual(
            violations(imports, ALLOWED),
            [
                "nea.core.hub imports nea.server.connection; core may import: wire",
            ],
        )

    def test_the_root_and_the_own_package_are_always_allowed(self):
        imports = {"nea.wire.codec": {"nea", "nea.wire.frames"}, "nea": set()}
        self.assertEqual(violations(imports, ALLOWED), [])

    def test_a_package_without_a_row_is_a_violation(self):
        self.assertEqual(
            violations({"nea.extra.x": {"nea.wire"}}, ALLOWED),
            ["nea.extra.x: package 'extra' has no row in ALLOWED"],
        )

    def test_tolerated_pairs_pass_and_stale_ones_fail(self):
        imports = {"nea.http.site": {"nea.server.listeners"}}
        tolerated = frozenset({("nea.http.site", "nea.server.listeners")})
        self.assertEqual(violations(imports, ALLOWED, tolerated), [])
        self.assertEqual(
            violations({"nea.http.site": set()}, ALLOWED, tolerated),
            [
                "tolerated nea.http.site -> nea.server.listeners no longer occurs: "
                "drop it from TOLERATED",
            ],
        )

    def test_imports_are_found_in_functions_and_relative_forms(self):
        source = (
            "import os\n"
            "import nea\n"
            "from nea import wire\n"
            "from . import codec\n"
            "from ..server.listeners import Listen\n"
            "def later():\n"
            "    from nea.http.site import http_listener\n"
            "    import nea.cluster.bus\n"
        )
        self.assertEqual(
            imports_of(source, "nea.core.hub"),
            {
                "nea",
                "nea.wire",
                "nea.core",
                "nea.server.listeners",
                "nea.http.site",
                "nea.cluster.bus",
            },
        )
        self.assertEqual(
            imports_of("from .hub import Hub\n", "nea.core", is_package=True), {"nea.core.hub"}
        )

    def test_a_cycle_is_found(self):
        self.assertEqual(cycle({"a": frozenset({"b"}), "b": frozenset({"a"})}), ["a", "b", "a"])
        self.assertIsNone(cycle({"a": frozenset({"b"}), "b": frozenset()}))
