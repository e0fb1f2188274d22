"""The CLI imports a command's module only when that command runs: `stats`, `eval`, `spt`, `--help`
and every error exit start without TorchRL (tensordict pulls in torch._dynamo: seconds of CPU per
start) or matplotlib, and every command still reaches its function."""

import importlib
import subprocess
import sys

from lares_rl import cli
from tests.cli_process import child_env

LIGHT_COMMANDS = ("lares_rl.cli", "lares_rl.commands.spt", "lares_rl.commands.evaluate", "lares_rl.commands.stats")


def test_every_command_but_recommend_names_a_function_of_its_module():
    assert set(cli.HANDLERS) == set(cli.COMMANDS) - {"recommend"}
    for handler in cli.HANDLERS.values():
        assert callable(getattr(importlib.import_module(handler.module), handler.function))


def test_the_cli_and_the_commands_that_do_not_need_them_import_neither_torchrl_nor_matplotlib():
    check = f"import sys; [__import__(m) for m in {LIGHT_COMMANDS!r}]; print(sorted(m for m in ('torchrl', 'tensordict', 'matplotlib') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", check], env=child_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
