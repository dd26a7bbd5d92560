"""Generate the Python constants and the README table from ``registry.yaml``.

    python -m tokentrail.semconv.generate          # rewrite the generated files
    python -m tokentrail.semconv.generate --check  # exit 1 if any is stale

The registry is the single source of truth; ``tests/test_semconv.py`` fails when the
generated files disagree with it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REGISTRY = HERE / "registry.yaml"
README = HERE.parent / "docs" / "semconv.md"  # the generated reference table; in a source checkout only
BEGIN, END = "<!-- semconv:begin -->", "<!-- semconv:end -->"

HEADER = '"""Generated from registry.yaml by ``python -m tokentrail.semconv.generate``: do not edit."""\n'


def load_registry(path: Path = REGISTRY) -> dict:
    return yaml.safe_load(path.read_text())


def _module(entries: list[dict], what: str) -> str:
    lines = [HEADER, ""]
    for entry in entries:
        lines.append(f"#: {entry['brief']}")
        lines.append(f"{entry['constant']} = {entry['id']!r}")
    lines.append("")
    lines.append(f"ALL_{what} = (")
    lines.extend(f"    {entry['constant']}," for entry in entries)
    lines.append(")")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|")


def markdown_table(registry: dict) -> str:
    rows = ["| attribute | type | unit | origin | meaning |", "|---|---|---|---|---|"]
    for entry in registry["attributes"]:
        brief = entry["brief"] + (f" (deprecated: use `{entry['deprecated']}`)" if entry.get("deprecated") else "")
        rows.append(
            f"| `{entry['id']}` | {entry['type']} | {_cell(entry.get('unit', ''))} | {entry['origin']} | {_cell(brief)} |"
        )
    rows += ["", "| metric | instrument | unit | origin | meaning |", "|---|---|---|---|---|"]
    for entry in registry["metrics"]:
        rows.append(
            f"| `{entry['id']}` | {entry['instrument']} | {_cell(entry['unit'])} | {entry['origin']} | {_cell(entry['brief'])} |"
        )
    return "\n".join(rows) + "\n"


def generated_files(registry: dict) -> dict[Path, str]:
    files = {
        HERE / "attributes.py": _module(registry["attributes"], "ATTRIBUTES"),
        HERE / "metrics.py": _module(registry["metrics"], "METRICS"),
    }
    if README.exists():
        text = README.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            files[README] = f"{head}{BEGIN}\n{markdown_table(registry)}{END}{tail}"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, content in generated_files(load_registry()).items():
        if path.exists() and path.read_text() == content:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(content)
    if stale:
        print("stale generated files: " + ", ".join(stale) + " (run python -m tokentrail.semconv.generate)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
