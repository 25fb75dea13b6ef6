"""The CI recipe (examples/ci/github-actions.yml, docs/ci.md) runs as written.

Each `run:` step of the workflow runs in order, job by job (the sweep job once per matrix entry),
with bash as GitHub runs it (`bash -eo pipefail`), in a fresh virtual environment, with the
workflow's `env` pointed at this checkout's wheel, a middlebox and a small capture. What GitHub's
own actions do is done by hand: `checkout` copies the user's repository into the job's fresh
workspace, `setup-python` is the virtual environment, and artifacts are directories that
`upload-artifact` fills and `download-artifact` copies back (a pattern merging several). A
recipe step that no longer works fails here before it fails for a user.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "examples" / "ci" / "github-actions.yml"
EXAMPLE = ROOT / "examples" / "port_scan_counter.py"


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment, and a wheel of this checkout for the recipe to install."""
    base = tmp_path_factory.mktemp("ci")
    wheels = base / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True)
    return base


def steps(job: dict) -> list[dict]:
    return job["steps"]


def expand(text: str, matrix: dict) -> str:
    for key, value in matrix.items():
        text = text.replace("${{ matrix.%s }}" % key, str(value))
    assert "${{" not in text, f"an expression this runner does not know: {text}"
    return text


def run_job(name: str, job: dict, matrix: dict, repo: Path, workspace: Path, artifacts: Path,
            env: dict[str, str]) -> None:
    for step in steps(job):
        uses = step.get("uses", "")
        with_ = {k: expand(str(v), matrix) for k, v in (step.get("with") or {}).items()}
        if uses.startswith("actions/checkout"):
            shutil.copytree(repo, workspace, dirs_exist_ok=True)
        elif uses.startswith("actions/setup-python"):
            pass  # the fresh virtual environment is first on PATH
        elif uses.startswith("actions/upload-artifact"):
            source = workspace / with_["path"]
            if source.is_dir():
                shutil.copytree(source, artifacts / with_["name"], dirs_exist_ok=True)
            else:  # a file is uploaded into the artifact's top level
                (artifacts / with_["name"]).mkdir(exist_ok=True)
                shutil.copy(source, artifacts / with_["name"])
        elif uses.startswith("actions/download-artifact"):
            names = [with_["name"]] if "name" in with_ else sorted(
                p.name for p in artifacts.iterdir() if p.match(with_["pattern"]))
            for artifact in names:
                shutil.copytree(artifacts / artifact, workspace / with_["path"], dirs_exist_ok=True)
        elif "run" in step:
            script = expand(step["run"], matrix)
            done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=workspace,
                                  env=env, capture_output=True, text=True, timeout=300)
            assert done.returncode == 0, (f"job {name} {matrix}, step {step.get('name', script)!r} exited "
                                          f"{done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        else:
            assert uses.startswith("mikepenz/action-junit-report"), f"a step this runner does not know: {step}"


def test_the_workflow_runs_as_written(venv: Path, small_trace: Path, tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    repo = tmp_path / "repo"  # the user's repository: their middlebox and their capture
    (repo / "boxes").mkdir(parents=True)
    (repo / "captures").mkdir()
    shutil.copy(EXAMPLE, repo / "boxes" / "counter.py")
    shutil.copy(small_trace, repo / "captures" / "office.pcap")
    [wheel] = (venv / "wheels").glob("*.whl")
    env = {**os.environ, **{k: str(v) for k, v in workflow["env"].items()}}
    env.update(FTMBCTL=f"ftmbctl[dask] @ {wheel.as_uri()}", MIDDLEBOX="boxes/counter.py:PortScanCounter",
               VIRTUAL_ENV=str(venv / "venv"), PATH=f"{venv / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHONPATH", None)
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    order = list(workflow["jobs"])
    assert order == ["record", "sweep", "verify"]
    for name in order:
        job = workflow["jobs"][name]
        axes = (job.get("strategy") or {}).get("matrix") or {}
        matrices = [{key: value} for key, values in axes.items() for value in values] or [{}]
        for matrix in matrices:
            workspace = tmp_path / "jobs" / f"{name}{''.join(f'-{v}' for v in matrix.values())}"
            workspace.mkdir(parents=True)
            run_job(name, job, matrix, repo, workspace, artifacts, env)
    shards = workflow["jobs"]["sweep"]["strategy"]["matrix"]["shard"]
    assert len(shards) == int(workflow["env"]["SHARDS"])
    junit = (artifacts / "junit" / "verify.xml").read_text()
    assert "<testcase" in junit and "failures=\"0\"" in junit
