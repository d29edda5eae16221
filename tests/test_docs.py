"""The man page and README cannot drift from the CLI."""

import os
import re
import shutil
import subprocess

import pytest

from fmcli.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN = os.path.join(ROOT, "man", "fmcli.1")


def man_text():
    return open(MAN).read().replace("\\-", "-")


@pytest.mark.parametrize("command", ["train", "predict"])
def test_every_option_is_in_the_man_page(command):
    text = man_text()
    for param in cli.commands[command].params:
        for name in param.opts + param.secondary_opts:
            assert re.search(re.escape(name) + r"\b", text), f"{command} option {name} missing from {MAN}"


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_man_page_is_lint_clean():
    res = subprocess.run(["groff", "-man", "-ww", "-z", MAN], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_readme_commands_match_ci():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    test_cmd = [line for line in ci.splitlines() if "pytest" in line][0].strip()
    assert test_cmd in readme
