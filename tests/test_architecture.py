"""The import direction between the app's packages (docs/architecture.md, "What may import what").

Every .py file under chat/ and claudeweb/ is parsed; every import of a chat or claudeweb module
counts, wherever it stands (module level, inside a function, under TYPE_CHECKING), and
`from chat.x import y` counts as an import of chat.x.y when y is a module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("chat", "claudeweb")

ANYTHING = ("*",)
BASE = ("chat.models", "chat.text", "chat.limits", "chat.errors", "chat.policies", "chat.telemetry")

# Area → the other areas its modules may import; a module may always import its own area. An area
# is a package or module directly under chat/ (chat.claude, chat.models), or claudeweb.
# chat.replies is absent from every row below the top layer: only the top layer imports it.
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    "chat": (),  # the package itself (chat/__init__.py)
    "chat.models": BASE,
    "chat.text": BASE,
    "chat.limits": BASE,
    "chat.errors": BASE,
    "chat.policies": BASE,
    "chat.telemetry": (),  # metrics and log ids: every package reports through it
    "chat.layers": BASE,
    "chat.migrations": BASE,
    "chat.claude": ("chat.models", "chat.text", "chat.errors", "chat.telemetry"),
    "chat.ledger": ("chat.claude", *BASE),
    "chat.conversations": ("chat.claude", *BASE),
    "chat.uploads": BASE,
    "chat.accounts": BASE,
    "chat.replies": (
        "chat.claude",
        "chat.ledger",
        "chat.conversations",
        "chat.uploads",
        "chat.accounts",
        *BASE,
    ),
    # The top layer.
    "chat.views": ANYTHING,
    "chat.admin": ANYTHING,
    "chat.management": ANYTHING,
    "chat.urls": ANYTHING,
    "chat.routing": ANYTHING,
    "chat.checks": ANYTHING,
    "chat.apps": ANYTHING,
    "chat.context_processors": ANYTHING,
    "claudeweb": ANYTHING,
}


def area_of(module: str) -> str:
    parts = module.split(".")
    return parts[0] if parts[0] != "chat" else ".".join(parts[:2])


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The modules an import statement names; [] for anything else."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    source = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        anchor = package[: len(package) - (node.level - 1)]
        source = ".".join(anchor + ([node.module] if node.module else []))
    submodules = [f"{source}.{alias.name}" for alias in node.names]
    if all(name in known for name in submodules):
        return submodules
    return [source] + [name for name in submodules if name in known]


def import_graph(root: Path) -> list[tuple[str, int, str, str]]:
    """(file, line, importer, imported) for every import of a chat or claudeweb module."""
    files = {
        module_name(root, path): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }
    known = set(files)
    edges = []
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in imported_modules(node, module, path.name == "__init__.py", known):
                if target.split(".")[0] in PACKAGES:
                    relative = path.relative_to(root).as_posix()
                    edges.append((relative, node.lineno, module, target))
    return edges


def violations(edges, rules=MAY_IMPORT) -> list[str]:
    problems = []
    for where, line, importer, target in edges:
        area, target_area = area_of(importer), area_of(target)
        if area not in rules:
            problems.append(f"{where}:{line} {importer}: {area} has no row in the table")
            continue
        allowed = rules[area]
        if allowed == ANYTHING or target_area in (area, *allowed):
            continue
        problems.append(
            f"{where}:{line} {importer} imports {target}"
            f" ({area} may import only {', '.join(allowed) or 'nothing of the app'})"
        )
    return sorted(set(problems))


def test_every_import_follows_the_layers():
    problems = violations(import_graph(ROOT))
    assert not problems, "imports against the direction in docs/architecture.md:\n" + "\n".join(
        problems
    )


def write(root: Path, relative: str, text: str = "") -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_check_reports_imports_against_the_direction(tmp_path):
    for package in ("chat", "chat/claude", "chat/replies", "chat/uploads", "chat/views"):
        write(tmp_path, f"{package}/__init__.py")
    write(tmp_path, "claudeweb/__init__.py")
    write(tmp_path, "chat/models.py")
    write(tmp_path, "chat/replies/runner.py", "from chat.claude import client\n")
    write(tmp_path, "chat/claude/client.py", "from chat import models\n")
    write(tmp_path, "chat/views/pages.py", "from chat.replies import runner\n")
    # Upward, in a function, and named as `from package import module`.
    write(
        tmp_path,
        "chat/uploads/attachments.py",
        "import chat.models\n\n\ndef later():\n    from chat.replies import runner\n",
    )
    write(tmp_path, "chat/claude/context.py", "from ..views import pages\n")
    write(tmp_path, "chat/documents.py", "from chat import models\n")

    assert violations(import_graph(tmp_path)) == [
        "chat/claude/context.py:1 chat.claude.context imports chat.views.pages"
        " (chat.claude may import only chat.models, chat.text, chat.errors, chat.telemetry)",
        "chat/documents.py:1 chat.documents: chat.documents has no row in the table",
        "chat/uploads/attachments.py:5 chat.uploads.attachments imports chat.replies.runner"
        " (chat.uploads may import only chat.models, chat.text, chat.limits, chat.errors,"
        " chat.policies, chat.telemetry)",
    ]
