"""app/ never imports benchmarks/ or workers/ at import time: `lehnz import`, `eval` and `bench` are
loaded only when they run or `lehnz --help` lists them (app/cli.py, _ToolGroup), and they still
read and answer as before."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.core import TyperGroup
from typer.main import get_command

from app.cli import _TOOLS, cli
from tests.cli import test_output
from tests.cli.support import lehnz

HELP_ENV = {**os.environ, "COLUMNS": "80"}


def layers_loaded_after(code: str) -> str:
    """The benchmarks.* and workers.* modules a fresh interpreter holds after running `code`."""
    script = f"import sys\n{code}\nprint(sorted(m for m in sys.modules if m.startswith(('benchmarks', 'workers'))))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()[-1]


def test_importing_the_cli_loads_no_benchmarks_or_workers_module() -> None:
    assert layers_loaded_after("import app.cli") == "[]"


def test_a_command_that_is_not_a_tool_loads_no_benchmarks_module() -> None:
    assert layers_loaded_after("from app.cli import cli\ncli(['org', '--help'], standalone_mode=False)") == "[]"


def test_lehnz_help_lists_the_tools_with_their_one_line_help_where_they_always_were() -> None:
    result = lehnz("--help", env=HELP_ENV)
    assert result.returncode == 0, result.stderr
    commands = result.stdout.split("Commands:")[1]
    assert [line.split()[0] for line in commands.splitlines() if line.strip()] == [
        "serve", "api", "worker", "migrate", "train", "import", "eval", "bench", "org", "keys", "dead-letter"]
    assert re.search(r"^  import +Bulk load items, users and events", commands, re.MULTILINE), commands
    assert re.search(r"^  eval +Measure recommendation quality", commands, re.MULTILINE), commands
    assert re.search(r"^  bench +Speed benchmark: latency, throughput", commands, re.MULTILINE), commands


def test_a_mistyped_tool_name_is_still_suggested() -> None:
    result = lehnz("imprt", env=HELP_ENV)
    assert result.returncode == 2
    assert "No such command 'imprt'. Did you mean 'import'?" in result.stderr, result.stderr


@pytest.mark.parametrize("name", list(_TOOLS))
def test_the_tools_help_pages_read_well_at_80_columns(name: str) -> None:
    """test_output's check walks the group's `commands`, where the tools are not (they are built on
    demand): the same check runs on them here."""
    group = get_command(cli)
    assert isinstance(group, TyperGroup)
    command = group.get_command(typer.Context(group), name)
    assert command is not None
    test_output.test_every_help_page_reads_well_at_80_columns([name], command)
