"""The man pages and README cannot drift from the CLI."""

import glob
import os
import re
import shutil
import subprocess

import pytest

from fmcli.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAN_DIR = os.path.join(ROOT, "man")
PAGES = sorted(glob.glob(os.path.join(MAN_DIR, "*.1")))


def man_path(command=None):
    return os.path.join(MAN_DIR, "fmcli.1" if command is None else f"fmcli-{command}.1")


def man_text(path):
    """The page's text with roff's escaped dashes and font changes undone."""
    text = open(path).read().replace("\\-", "-")
    return re.sub(r"\\f[BIRP]|\\\(em|\\e", " ", text)


def mentions(text, name):
    """`name` as a whole option: not part of a longer one (-in is not found in --in or -input)."""
    return re.search(r"(?<![\w-])" + re.escape(name) + r"(?![\w-])", text) is not None


def test_every_command_has_a_page():
    assert sorted(cli.commands) == ["convert", "cv", "plot", "predict", "recommend", "train", "tune"]
    for command in cli.commands:
        assert os.path.exists(man_path(command)), f"no man page for fmcli {command}"
    assert set(PAGES) == {man_path()} | {man_path(c) for c in cli.commands}


@pytest.mark.parametrize("command", ["train", "predict", "convert", "plot", "cv", "tune", "recommend"])
def test_every_option_is_in_its_man_page(command):
    path = man_path(command)
    text = man_text(path)
    names = [n for p in cli.commands[command].params for n in p.opts + p.secondary_opts]
    names += ["-h", "-help", "--help"]
    missing = [n for n in names if not mentions(text, n)]
    assert not missing, f"fmcli {command} options missing from {path}: {missing}"


def test_overview_page_lists_commands_and_exit_codes():
    text = man_text(man_path())
    for command in cli.commands:
        assert f".BR fmcli-{command} (1)" in text, f"fmcli.1 does not refer to fmcli-{command}(1)"
    for name in ["--version", "--help"]:
        assert mentions(text, name)
    section = text.split(".SH EXIT STATUS")[1].split(".SH")[0]
    for code in ["0", "1", "2", "130", "141", "143"]:
        assert re.search(rf"^\.B {code}$", section, re.M), f"exit status {code} not in fmcli.1"


def test_option_check_can_fail():
    """The check above finds a missing option (and is not fooled by a longer one)."""
    assert not mentions("--in and -input", "-in")
    assert mentions(".BR -in \", \" --in", "-in")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_man_page_is_groff_clean(page):
    res = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr


@pytest.mark.skipif(shutil.which("mandoc") is None, reason="mandoc not installed")
@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_man_page_is_mandoc_clean(page):
    res = subprocess.run(["mandoc", "-Tlint", page], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stdout + res.stderr


def test_man_pages_are_installed_with_the_package():
    pyproject = open(os.path.join(ROOT, "pyproject.toml")).read()
    line = [l for l in pyproject.splitlines() if l.startswith('"share/man/man1"')][0]
    for page in PAGES:
        assert f'"man/{os.path.basename(page)}"' in line


def test_readme_commands_match_ci():
    readme = open(os.path.join(ROOT, "README.md")).read()
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    test_cmd = [line for line in ci.splitlines() if "pytest" in line][0].strip()
    assert test_cmd in readme


def test_readme_option_table_covers_libfm_options():
    """The README's table has a row for every libFM option (libfm-behaviour §1.2)."""
    readme = open(os.path.join(ROOT, "README.md")).read()
    table = readme.split("## libFM options in fmcli")[1].split("\n## ")[0]
    for name in ["task", "train", "test", "validation", "method", "dim", "init_stdev", "iter",
                 "learn_rate", "regular", "meta", "relation", "cache_size", "out", "rlog",
                 "save_model", "load_model", "seed", "verbosity", "help"]:
        assert re.search(rf"^\| `-{name}[` ]", table, re.M), f"-{name} missing from the README table"
