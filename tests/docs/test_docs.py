"""The docs stay true: every service's files are the ones docs/architecture.md's matrix names
(no file missing from it, none listed that is gone), and no doc links outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "architecture.md"
MATRIX_HEADING = "## Files of each service"
TICK = "✓"
_CELL_FILE = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _section(text: str, heading: str) -> str:
    start = text.index(heading) + len(heading)
    end = text.find("\n## ", start)
    return text[start : end if end != -1 else None]


def _rows(table_text: str) -> list[list[str]]:
    rows = []
    for line in table_text.splitlines():
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def documented_files() -> dict[str, set[str]]:
    """{service: files} from the matrix (a ✓ under the service) and the own-modules table
    (service, file, what it holds)."""
    section = _section(ARCHITECTURE.read_text(), MATRIX_HEADING)
    tables = [t for t in re.split(r"\n\s*\n", section) if t.lstrip().startswith("|")]
    assert len(tables) == 2, "the section holds the shared-roles matrix and the own-modules table"
    matrix, own = _rows(tables[0]), _rows(tables[1])
    services = matrix[0][2:]  # | file | role | <service> ...
    files: dict[str, set[str]] = {service: set() for service in services}
    for row in matrix[1:]:
        name = _CELL_FILE.fullmatch(row[0])
        assert name, f"matrix row without a `file`: {row}"
        for service, cell in zip(services, row[2:], strict=True):
            if cell == TICK:
                files[service].add(name.group(1))
    for row in own[1:]:
        service, name = row[0], _CELL_FILE.fullmatch(row[1])
        assert service in files, f"own module of an unknown service: {row}"
        assert name, f"own-modules row without a `file`: {row}"
        files[service].add(name.group(1))
    return files


def package_files(service: str) -> set[str]:
    """The hand-written files of a service's package: modules (with their subpackage path) and
    folders of data (`migrations/`)."""
    package = ROOT / "services" / service / "src" / f"aether_{service}"
    found = set()
    for path in package.rglob("*"):
        if "__pycache__" in path.parts or path.name == "py.typed":
            continue
        relative = path.relative_to(package)
        if path.is_file() and path.suffix == ".py":
            found.add(relative.as_posix())
        elif path.is_dir() and not any(path.glob("*.py")):
            found.add(relative.as_posix() + "/")  # a folder of data files: listed as such
    return found


def test_every_service_is_in_the_matrix() -> None:
    services = {p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists()}
    assert set(documented_files()) == services


def test_each_services_files_are_the_ones_the_matrix_names() -> None:
    drift = {}
    for service, documented in documented_files().items():
        actual = package_files(service)
        if actual != documented:
            drift[service] = {
                "not in docs/architecture.md": sorted(actual - documented),
                "in the docs, not in the package": sorted(documented - actual),
            }
    assert not drift, drift


def _docs() -> list[Path]:
    skip = {".venv", "node_modules", ".tools", ".git"}
    return [p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts)]


def test_no_doc_links_outside_the_repository() -> None:
    outside = []
    for doc in _docs():
        text = doc.read_text()
        if "../shared" in text or "DESIGN.md" in text:
            outside.append(f"{doc.relative_to(ROOT)}: names a file outside the repository")
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a web address or an anchor
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT):
                outside.append(f"{doc.relative_to(ROOT)}: {target} leaves the repository")
            elif not path.exists():
                outside.append(f"{doc.relative_to(ROOT)}: {target} does not exist")
    assert not outside, outside
