"""Safety (DESIGN §10, CONVENTIONS 10): files from someone else are data, never code or orders.

- The package source holds no pickle, no eval/exec, no os.system, no shell strings: scanned with
  ``ast`` (so comments and strings that merely mention them do not count), module by module,
  middleboxes included; the scanner is itself tested on snippets that must be caught.
- A manifest cannot point a reader outside its run directory.
- ``record`` never overwrites what is at ``--out`` without ``--force``.
- An error message does not pass control characters from a file on to the terminal.
"""

from __future__ import annotations

import ast
import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftmbctl.cli import app
from ftmbctl.errors import DamagedRun
from ftmbctl.pcapio import iter_packets, write_pcap
from ftmbctl.record import RecordConfig, record
from ftmbctl.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ftmbctl"
ENV = {"COLUMNS": "120", "NO_COLOR": "1", "FORCE_COLOR": None, "TTY_COMPATIBLE": None}

# ---------------------------------------------------------------- the source scan

PICKLE_LIKE = {"pickle", "cPickle", "_pickle", "shelve", "dill", "cloudpickle", "jsonpickle"}
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen"}
SHELL_ONLY = {"getoutput", "getstatusoutput"}  # subprocess functions that always run a shell
OS_SHELL = {"system", "popen"}


def _is_string_expr(node: ast.AST) -> bool:
    """A command given as one string: a literal, an f-string, a concatenation or a .format()."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        return _is_string_expr(node.left)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        return _is_string_expr(node.func.value)
    return False


def forbidden(source: str, filename: str = "<snippet>") -> list[str]:
    """Every forbidden construct in ``source``, as "line N: what"."""
    tree = ast.parse(source, filename)
    found: list[str] = []
    modules: dict[str, str] = {}  # local name -> module it is (import x as y)
    functions: dict[str, tuple[str, str]] = {}  # local name -> (module, function) (from x import f as g)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                modules[alias.asname or top] = alias.name
                if top in PICKLE_LIKE:
                    found.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            for alias in node.names:
                functions[alias.asname or alias.name] = (node.module, alias.name)
                if top in PICKLE_LIKE:
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                if (node.module, alias.name) in {("os", n) for n in OS_SHELL} | {("subprocess", n) for n in SHELL_ONLY}:
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        target: tuple[str, str] | None = None
        if isinstance(func, ast.Name):
            if func.id in ("eval", "exec"):
                found.append(f"line {node.lineno}: {func.id}(")
            target = functions.get(func.id)
        elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner = modules.get(func.value.id, func.value.id)
            target = (owner, func.attr)
            if owner == "builtins" and func.attr in ("eval", "exec"):
                found.append(f"line {node.lineno}: builtins.{func.attr}(")
        if any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
               for k in node.keywords):
            found.append(f"line {node.lineno}: shell=...")
        if target is None:
            continue
        module, name = target
        if module == "os" and name in OS_SHELL:
            found.append(f"line {node.lineno}: os.{name}(")
        if module == "subprocess" and name in SHELL_ONLY:
            found.append(f"line {node.lineno}: subprocess.{name}(")
        if module == "subprocess" and name in SUBPROCESS_CALLS:
            command = node.args[0] if node.args else next((k.value for k in node.keywords if k.arg == "args"), None)
            if command is not None and _is_string_expr(command):
                found.append(f"line {node.lineno}: subprocess.{name} with a string command")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_whole_package_is_scanned() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in MODULES}
    assert {"cli.py", "rundir.py", "snapshot.py", "codec.py", "middlebox.py", "middleboxes/nat.py"} <= names


@pytest.mark.parametrize("module", MODULES, ids=[p.relative_to(PACKAGE).as_posix() for p in MODULES])
def test_no_pickle_eval_exec_or_shell_in_the_package(module: Path) -> None:
    assert forbidden(module.read_text(encoding="utf-8"), str(module)) == []


BAD_SNIPPETS = {
    "import pickle": "import pickle\n",
    "import pickle as safe": "import pickle as safe\n",
    "from pickle import loads": "from pickle import loads\n",
    "import shelve": "import shelve\n",
    "eval": "x = eval('1 + 1')\n",
    "exec": "exec('x = 1')\n",
    "builtins.eval": "import builtins\nbuiltins.eval('1')\n",
    "os.system": "import os\nos.system('ls')\n",
    "os.popen": "import os\nos.popen('ls')\n",
    "from os import system": "from os import system as run_it\nrun_it('ls')\n",
    "shell=True": "import subprocess\nsubprocess.run(['ls'], shell=True)\n",
    "shell=flag": "import subprocess\nsubprocess.run(['ls'], shell=flag)\n",
    "string command": "import subprocess\nsubprocess.check_output('ls -l')\n",
    "f-string command": "import subprocess as sp\nsp.Popen(f'ls {path}')\n",
    "concatenated command": "from subprocess import call\ncall('rm ' + name)\n",
    "formatted command": "import subprocess\nsubprocess.run(args='ls {}'.format(d))\n",
    "getoutput": "import subprocess\nsubprocess.getoutput('ls')\n",
}
GOOD_SNIPPETS = {
    "argument list": "import subprocess\nsubprocess.run(['ls', '-l'], check=True)\n",
    "shell=False": "import subprocess\nsubprocess.run([exe, path], shell=False)\n",
    "a word in a string": "doc = 'no pickle, no eval(, no os.system, no shell=True'\n",
    "a method named eval": "model.eval()\nparser.exec_module(m)\n",
    "json": "import json\njson.loads(text)\n",
}


@pytest.mark.parametrize("snippet", sorted(BAD_SNIPPETS))
def test_the_scanner_catches(snippet: str) -> None:
    assert forbidden(textwrap.dedent(BAD_SNIPPETS[snippet])), snippet


@pytest.mark.parametrize("snippet", sorted(GOOD_SNIPPETS))
def test_the_scanner_lets_through(snippet: str) -> None:
    assert forbidden(textwrap.dedent(GOOD_SNIPPETS[snippet])) == []


# ---------------------------------------------------------------- a small run to tamper with

@pytest.fixture(scope="module")
def run(small_trace: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("safety")
    trace = base / "t.pcap"
    write_pcap(trace, list(iter_packets(small_trace))[:30])
    out = base / "run"
    record(RecordConfig(trace=trace, out=out, middlebox="nat", queues=2, snapshot_every=10, flush_every=4, seed=1))
    return out


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def tree(path: Path) -> dict[str, str]:
    if path.is_file():
        return {"": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def with_listed(run: Path, dest: Path, rel: str, entry: dict) -> Path:
    shutil.copytree(run, dest, symlinks=True)  # a symlink in the run stays a symlink
    doc = json.loads((dest / "manifest.json").read_text())
    doc["files"][rel] = entry
    (dest / "manifest.json").write_text(json.dumps(doc))
    return dest


# ---------------------------------------------------------------- manifest paths stay inside the run

ESCAPES = ["../x", "/etc/passwd", "snapshots/../../x", "./../x", "snapshots/../../run/input.log", "..", "../run"]


@pytest.mark.parametrize("rel", ESCAPES)
def test_manifest_path_outside_the_run_directory_is_refused(run: Path, tmp_path: Path, rel: str) -> None:
    outside = tmp_path / "x"
    outside.write_bytes(b"secret")  # were it followed, ../x would exist and match
    digest = hashlib.sha256(b"secret").hexdigest()
    copy = with_listed(run, tmp_path / "run", rel, {"bytes": 6, "sha256": digest})
    with pytest.raises(DamagedRun) as info:
        RunDir(copy).check_complete()
    assert "outside the run directory" in str(info.value) and repr(rel) in str(info.value)
    result = invoke("crash-replay", copy, "--at", 0, "--jobs", 1)
    assert result.exit_code == 3 and "outside the run directory" in result.stderr, result.output
    assert not (copy / "crash").exists()


def test_manifest_path_through_a_symlink_out_of_the_run_directory_is_refused(run: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.snap"
    outside.write_bytes(b"not yours")
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "snapshots" / "extra.snap").symlink_to(outside)
    with_listed(copy, tmp_path / "run2", "snapshots/extra.snap",
                {"bytes": 9, "sha256": hashlib.sha256(b"not yours").hexdigest()})
    with pytest.raises(DamagedRun, match="outside the run directory"):
        RunDir(tmp_path / "run2").check_complete()


def test_manifest_paths_inside_the_run_directory_are_still_checked(run: Path, tmp_path: Path) -> None:
    """The guard refuses what leaves the run, not unusual names inside it."""
    copy = with_listed(run, tmp_path / "run", "snapshots/./not-there.snap", {"bytes": 1, "sha256": None})
    with pytest.raises(DamagedRun, match="not-there.snap: file is missing"):
        RunDir(copy).check_complete()


# ---------------------------------------------------------------- record never overwrites without --force

def _existing(kind: str, run: Path, tmp_path: Path) -> Path:
    target = tmp_path / kind
    if kind == "run":
        shutil.copytree(run, target)
        assert invoke("crash-replay", target, "--at", 1, "--jobs", 1).exit_code == 0
    elif kind == "crash-image":
        source = tmp_path / "source"
        shutil.copytree(run, source)
        assert invoke("crash-replay", source, "--at", 3, "--keep", tmp_path / "kept", "--jobs", 1).exit_code == 0
        shutil.move(tmp_path / "kept" / "crash-000003-clean", target)
    elif kind == "recovered-run":
        source = tmp_path / "source"
        shutil.copytree(run, source)
        assert invoke("crash-replay", source, "--at", 3, "--keep", tmp_path / "kept", "--jobs", 1).exit_code == 0
        assert invoke("recover", tmp_path / "kept" / "crash-000003-clean", "--out", target).exit_code == 0
    elif kind == "empty-directory":
        target.mkdir()
    else:
        target.write_text("someone's notes\n")
    return target


@pytest.mark.parametrize("kind", ["run", "crash-image", "recovered-run", "empty-directory", "file"])
def test_record_refuses_to_overwrite_without_force(run: Path, tmp_path: Path, kind: str) -> None:
    target = _existing(kind, run, tmp_path)
    before = tree(target)
    trace = RunDir(run).manifest["trace"]["path"]
    result = invoke("record", trace, "--out", target, "--queues", 2, "--seed", 9)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(target) in errors[0] and "--force" in errors[0], result.stderr
    assert "Traceback" not in result.output
    assert tree(target) == before
    assert not list(tmp_path.glob(f".{target.name}.replaced-*"))  # nothing moved aside either


# ---------------------------------------------------------------- no terminal control from a file

def test_error_message_carries_no_control_characters_from_a_manifest(run: Path, tmp_path: Path) -> None:
    copy = with_listed(run, tmp_path / "run", "\x1b]0;owned\x07\x1b[2Jinput.log", {"bytes": 1, "sha256": None})
    result = invoke("crash-replay", copy, "--at", 0, "--jobs", 1)
    assert result.exit_code == 3, result.output
    assert not any(ord(c) < 32 and c not in "\n\t" for c in result.stderr), repr(result.stderr)
