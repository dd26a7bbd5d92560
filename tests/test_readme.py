"""The README runs as written: every ```python and ```sh block, in order, in one fresh directory, against the
fake provider on 127.0.0.1 (OPENAI_BASE_URL), as a user would paste them. A block that cannot run here is
preceded by ``<!-- readme-test: skip (why) -->``; that list stays tiny."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tokentrail.testing import fake_provider, openai_api

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip \((.+?)\) -->\s*$")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)


def blocks(text: str) -> list[tuple[str, str, str | None]]:
    """(language, code, skip reason) of every fenced block, in order."""
    out = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        out.append((match.group(1), match.group(2), skip.group(1) if skip else None))
    return out


def test_the_readme_is_a_quick_start_with_two_commands_at_the_top():
    text = README.read_text()
    lines = len(text.splitlines())
    assert lines <= 300, f"README.md has {lines} lines: it is a quick start; put reference material in docs/ and link it"
    first = blocks(text)[0]
    assert first[:2] == ("sh", "make demo\nmake test\n")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert re.search(r"^make test\b", (ROOT / ".ci" / "run").read_text(), re.M)  # CI runs the same command
    skipped = [reason for _, _, reason in blocks(text) if reason]
    assert len(skipped) <= 3 and all(len(reason) > 10 for reason in skipped)
    for link in re.findall(r"\]\(([^)#]+)\)", text):  # docs, screenshot, changelog, licence all exist
        assert (ROOT / link).exists(), link
    assert "pip install tokentrail[" not in text  # not on an index; unquoted brackets break in zsh


def _env(server) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TOKENTRAIL_", "OPENAI_"))}
    # the test extra installs opentelemetry-distro too: name ours, as docs/pipeline.md says for that case
    env.update(OTEL_PYTHON_DISTRO="tokentrail", OTEL_PYTHON_CONFIGURATOR="tokentrail")
    env.update(OPENAI_BASE_URL=openai_api.base_url(server), OPENAI_API_KEY="sk-test",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return env


def _zero_code(code: str) -> bool:
    """Snippets of an app (no providers of their own) run as the app would: under opentelemetry-instrument."""
    return "TracerProvider" not in code and "InMemoryPipeline" not in code


@pytest.mark.slow
def test_every_code_block_runs_as_written(tmp_path):
    ran = []
    with fake_provider() as server:
        env = _env(server)
        for lang, code, skip in blocks(README.read_text()):
            if skip or lang not in ("python", "sh"):
                continue
            if lang == "python" and code.startswith("# app.py\n"):
                (tmp_path / "app.py").write_text(code)
                continue
            if lang == "python":
                script = tmp_path / f"block{len(ran)}.py"
                script.write_text(code)
                argv = [sys.executable, str(script)]
                if _zero_code(code):
                    argv = [str(Path(sys.executable).with_name("opentelemetry-instrument")), *argv]
                    env_run = {**env, "OTEL_TRACES_EXPORTER": "tokentrail_ledger", "OTEL_METRICS_EXPORTER": "none"}
                else:
                    env_run = env
                commands = [(argv, env_run, code)]
            else:
                commands = [(["bash", "-c", line], env, line) for line in code.splitlines() if line.strip()]
            for argv, env_run, what in commands:
                proc = subprocess.run(argv, cwd=tmp_path, env=env_run, capture_output=True, text=True, timeout=120)
                assert proc.returncode == 0, f"{what}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
                assert "Traceback" not in proc.stderr, f"{what}\n{proc.stderr[-3000:]}"
                assert "UNAVAILABLE" not in proc.stderr  # nothing tried to reach a backend that is not there
                ran.append((what, proc.stdout))
    outputs = dict(ran)
    report = next(out for what, out in ran if what.startswith("tokentrail report --by tenant,feature"))
    assert re.search(r"^acme\s+summarize\s+1\b", report, re.M), report  # the zero-code app's call, owned
    task = next(out for what, out in ran if "tokentrail.task(" in what)
    assert task.split()[:1] == ["3"] and task.split()[-1] == "ok", task  # three calls, counted by the task
    assert outputs["tokentrail --version"].startswith("tokentrail ")
    assert "total" in outputs["tokentrail price gpt-5.4-mini --input 10000 --cache-read 2000 --output 1200"]


def test_no_install_line_anywhere_points_at_an_index():
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        assert not re.search(r"pip install tokentrail\[", page.read_text()), page.name


def test_every_environment_variable_the_code_reads_is_in_the_configuration_reference():
    # a TOKENTRAIL_* name assigned to a constant or read from os.environ (semconv constants are attribute names)
    read = re.compile(r"""(?:= |environ\.get\(|getenv\()["'](TOKENTRAIL_[A-Z0-9_]+)["']""")
    names = set()
    for folder in ("tokentrail", "processor", "instrumentation"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(read.findall(path.read_text()))
    assert len(names) > 15
    documented = (ROOT / "docs" / "configuration.md").read_text()
    assert sorted(n for n in names if n not in documented) == []
