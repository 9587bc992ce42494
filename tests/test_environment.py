"""The environment a state is computed in: captured cheaply, git included, and diffed."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dagger as dg
from dagger.environment import ENVIRONMENT_VARIABLES, capture_environment, environment_changes

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="needs git")

PROBE = """
import json, sys
from dagger.environment import capture_environment
captures = [capture_environment() for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1)]
print(json.dumps({"environment": captures[-1], "torch_imported": "torch" in sys.modules}))
"""


def git(directory, *args):
    return subprocess.run(
        [GIT, "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def repository(tmp_path):
    """A git repository with a committed script (probe.py) and a committed data file."""
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "probe.py").write_text(PROBE)
    (repo / "params.txt").write_text("lr=0.1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "first")
    return repo


@pytest.fixture
def probe(subprocess_env, tmp_path):
    """Runs a script the way a user does; returns what capture_environment() said there."""

    def run(script, *args, cwd=None, env=None, code=None):
        environment = {**subprocess_env, "GIT_CEILING_DIRECTORIES": str(tmp_path), **(env or {})}
        command = [sys.executable, "-c", code] if code else [sys.executable, str(script)]
        result = subprocess.run(
            [*command, *args],
            cwd=cwd or tmp_path,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


def test_capture_describes_this_process_as_json():
    environment = capture_environment()
    assert json.loads(json.dumps(environment)) == environment
    assert environment["python"] == platform.python_version()
    assert environment["python_implementation"] == platform.python_implementation()
    assert environment["platform"] == platform.platform()
    assert environment["dagger"] == dg.__version__
    assert environment["numpy"] == np.__version__
    assert environment["torch"] == torch.__version__
    assert environment["torch_threads"] == torch.get_num_threads()
    assert environment["torch_deterministic"] == torch.are_deterministic_algorithms_enabled()
    assert list(environment["env"]) == list(ENVIRONMENT_VARIABLES)
    # Each call gives a new dict: changing one changes no later capture.
    environment["env"]["OMP_NUM_THREADS"] = "changed"
    environment["cuda_devices"].append("changed")
    again = capture_environment()
    assert again["env"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
    assert "changed" not in again["cuda_devices"]


def test_deterministic_algorithms_are_read_at_each_capture():
    enabled = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(not enabled)
        assert capture_environment()["torch_deterministic"] is (not enabled)
    finally:
        torch.use_deterministic_algorithms(enabled)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a GPU")
def test_without_a_gpu_there_is_no_cuda():
    environment = capture_environment()
    assert (environment["cuda"], environment["cuda_devices"], environment["cudnn"]) == (
        None,
        [],
        None,
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_with_a_gpu_cuda_and_its_devices_are_named():
    torch.cuda.init()  # devices are named once CUDA is initialised (naming initialises it)
    environment = capture_environment()
    assert environment["cuda"] == torch.version.cuda
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    assert environment["cuda_devices"] == names
    assert environment["cudnn"] == torch.backends.cudnn.version()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_capturing_never_initialises_cuda(probe, tmp_path):
    code = (
        "import json, torch; from dagger.environment import capture_environment; "
        "e = capture_environment(); "
        "print(json.dumps([torch.cuda.is_initialized(), e['device'], e['cuda_devices']]))"
    )
    assert probe(None, code=code) == [False, "cpu", []]


def test_torch_is_not_imported_to_learn_its_version(probe, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    result = probe(tmp_path / "probe.py")
    assert result["torch_imported"] is False
    import importlib.metadata

    assert result["environment"]["torch"] == importlib.metadata.version("torch")
    assert result["environment"]["torch_threads"] is None


def test_the_environment_variables_are_recorded(probe, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    env = {"OMP_NUM_THREADS": "3", "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": ""}
    variables = probe(tmp_path / "probe.py", env=env)["environment"]["env"]
    assert variables["OMP_NUM_THREADS"] == "3"
    assert variables["PYTHONHASHSEED"] == "0"
    assert variables["CUDA_VISIBLE_DEVICES"] == ""
    assert variables["CUBLAS_WORKSPACE_CONFIG"] == os.environ.get("CUBLAS_WORKSPACE_CONFIG")


# -- git -----------------------------------------------------------------------------------------


@needs_git
def test_a_clean_repository_gives_its_commit(probe, repository, tmp_path):
    # Run from elsewhere: the script's repository counts, not the current directory.
    environment = probe(repository / "probe.py", cwd=tmp_path)["environment"]
    assert environment["git_commit"] == git(repository, "rev-parse", "HEAD")
    assert environment["git_dirty"] is False
    assert environment["git_error"] is None


@needs_git
def test_a_changed_tracked_file_makes_it_dirty(probe, repository):
    (repository / "params.txt").write_text("lr=0.2\n")
    environment = probe(repository / "probe.py")["environment"]
    assert environment["git_commit"] == git(repository, "rev-parse", "HEAD")
    assert environment["git_dirty"] is True


@needs_git
def test_a_staged_change_makes_it_dirty(probe, repository):
    (repository / "new_module.py").write_text("X = 1\n")
    git(repository, "add", "new_module.py")
    assert probe(repository / "probe.py")["environment"]["git_dirty"] is True


@needs_git
def test_untracked_files_leave_it_clean(probe, repository):
    # Outputs (the experiment directory itself) are usually untracked files in the work tree.
    (repository / "runs").mkdir()
    (repository / "runs" / "state.pkl").write_bytes(b"output")
    assert probe(repository / "probe.py")["environment"]["git_dirty"] is False


@needs_git
def test_without_a_script_the_current_directory_counts(probe, repository, tmp_path):
    environment = probe(None, cwd=repository, code=PROBE)["environment"]
    assert environment["git_commit"] == git(repository, "rev-parse", "HEAD")
    outside = probe(None, cwd=tmp_path, code=PROBE)["environment"]
    assert outside["git_commit"] is None
    assert outside["git_error"] == f"no git repository at {tmp_path.resolve()}"


@needs_git
def test_a_tool_names_the_directory_whose_repository_counts(repository, tmp_path):
    # As `python -m dagger ...` does: its own script is not the user's code.
    environment = capture_environment(git_directory=repository)
    assert environment["git_commit"] == git(repository, "rev-parse", "HEAD")
    assert environment["git_dirty"] is False
    outside = capture_environment(git_directory=tmp_path / "missing")
    assert outside["git_commit"] is None
    assert outside["git_error"].startswith(f"`git status` in {tmp_path / 'missing'} failed: ")


@needs_git
def test_a_repository_without_commits(probe, tmp_path):
    repo = tmp_path / "fresh"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "probe.py").write_text(PROBE)
    environment = probe(repo / "probe.py")["environment"]
    assert environment["git_commit"] is None
    assert environment["git_error"] == f"the git repository at {repo.resolve()} has no commit yet"


def test_without_git_it_says_so(probe, tmp_path):
    (tmp_path / "probe.py").write_text(PROBE)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    environment = probe(tmp_path / "probe.py", env={"PATH": str(empty)})["environment"]
    assert (environment["git_commit"], environment["git_dirty"]) == (None, None)
    assert environment["git_error"] == "git is not installed (no `git` on PATH)"


@needs_git
def test_git_runs_once_per_process(probe, repository, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "git-calls.log"
    wrapper = bin_dir / "git"
    wrapper.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/sh
            echo "$@" >> {log}
            exec {GIT} "$@"
            """
        )
    )
    wrapper.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    environment = probe(repository / "probe.py", "5", env={"PATH": path})["environment"]
    assert environment["git_commit"] == git(repository, "rev-parse", "HEAD")
    assert len(log.read_text().splitlines()) == 1


# -- differences ---------------------------------------------------------------------------------


def base_environment(**changes):
    environment = {
        "python": "3.11.7",
        "python_implementation": "CPython",
        "platform": "Linux-6.1-x86_64",
        "hostname": "node-1",
        "dagger": "0.1.0",
        "numpy": "1.26.4",
        "torch": "2.3.0",
        "cuda": "12.1",
        "cuda_devices": ["NVIDIA A100-SXM4-80GB"],
        "cudnn": 8902,
        "cudnn_benchmark": False,
        "torch_deterministic": False,
        "torch_threads": 8,
        "git_commit": "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
        "git_dirty": False,
        "git_error": None,
        "env": {name: None for name in ENVIRONMENT_VARIABLES},
    }
    environment.update(changes)
    return environment


def test_an_identical_environment_has_no_changes():
    assert environment_changes(base_environment(), base_environment()) == []
    assert environment_changes(capture_environment(), capture_environment()) == []


def test_changes_read_what_and_from_to():
    first = base_environment()
    second = base_environment(
        torch="2.4.1",
        hostname="node-7",
        cuda_devices=["NVIDIA H200"],
        torch_deterministic=True,
        git_commit="4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e",
        git_dirty=True,
        env={**first["env"], "OMP_NUM_THREADS": "4"},
    )
    assert environment_changes(first, second) == [
        "hostname node-1 -> node-7",
        "torch 2.3.0 -> 2.4.1",
        "cuda devices NVIDIA A100-SXM4-80GB -> NVIDIA H200",
        "torch deterministic algorithms off -> on",
        "git 1a2b3c4d5e6f -> 4d5e6f7a8b9c (dirty)",
        "OMP_NUM_THREADS unset -> 4",
    ]


def test_a_tree_made_dirty_at_the_same_commit():
    assert environment_changes(base_environment(), base_environment(git_dirty=True)) == [
        "git 1a2b3c4d5e6f -> 1a2b3c4d5e6f (dirty)"
    ]


def test_no_gpu_and_no_git_on_one_side():
    second = base_environment(
        cuda=None, cuda_devices=[], cudnn=None, cudnn_benchmark=None,
        git_commit=None, git_dirty=None, git_error="git is not installed (no `git` on PATH)",
    )  # fmt: skip
    assert environment_changes(base_environment(), second) == [
        "cuda 12.1 -> (none)",
        "cuda devices NVIDIA A100-SXM4-80GB -> (none)",
        "cudnn 8902 -> (none)",
        "cudnn benchmark off -> (none)",
        "git 1a2b3c4d5e6f -> (none: git is not installed (no `git` on PATH))",
    ]


def test_a_local_build_label_alone_is_no_change():
    # One record read the version from the imported module, the other from the metadata.
    assert environment_changes(base_environment(torch="2.3.0+cu121"), base_environment()) == []
    assert environment_changes(
        base_environment(torch="2.3.0+cu121"), base_environment(torch="2.3.0+cpu")
    ) == ["torch 2.3.0+cu121 -> 2.3.0+cpu"]


def test_keys_one_record_lacks_or_adds():
    older = base_environment()
    del older["cudnn_benchmark"]
    newer = base_environment(accelerator="tpu")
    assert environment_changes(older, newer) == [
        "cudnn benchmark (not recorded) -> off",
        "accelerator (not recorded) -> tpu",
    ]
    assert environment_changes(None, newer) == ["environment not recorded for the first state"]
    assert environment_changes(None, None) == []


# -- a broken git never fails a state ------------------------------------------------------------

RUN_TREE = """
import json, sys
import dagger as dg
from helpers import Add, CounterState
exp = dg.Experiment(sys.argv[1], CounterState)
Add(1)(exp.spawn_new_tree(start=0))
report = exp.run(progress=False)
environment = dg.Experiment.restore(sys.argv[1]).graph.leaves[0].dagger.environment
print(json.dumps({"failed": report.failed, "computed": report.computed,
                  "git": {k: v for k, v in environment.items() if k.startswith("git")}}))
"""


def fake_git(tmp_path, body):
    """A `git` on PATH that runs ``body`` (sh) instead of git."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / "git").chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # Bytes that are not UTF-8 (used to fail every state with UnicodeDecodeError).
        (r'printf "\377\376 garbage \200\n"', "named no commit: it printed '?? garbage ?'"),
        # A commit line holding a path and terminal escapes: stored verbatim, printed raw.
        (
            r'printf "# branch.oid ../etc/passwd \033[31mRED\n1 .M N... x\n"',
            "named no valid commit: '../etc/passwd ?[31mRED'",
        ),
        # A commit of the wrong length.
        ('echo "# branch.oid 1234abcd"', "named no valid commit: '1234abcd'"),
    ],
)
def test_a_git_that_prints_garbage_is_recorded_not_fatal(
    probe, subprocess_env, tmp_path, body, reason
):
    (tmp_path / "run_tree.py").write_text(RUN_TREE)
    result = probe(tmp_path / "run_tree.py", str(tmp_path / "exp"), env=fake_git(tmp_path, body))
    assert (result["failed"], result["computed"]) == (0, 2)
    assert result["git"]["git_commit"] is None
    assert result["git"]["git_error"].endswith(reason)
    listing = subprocess.run(
        [sys.executable, "-m", "dagger", "ls", "--env", str(tmp_path / "exp")],
        env=subprocess_env,
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert b"\x1b" not in listing.stdout and b"passwd" not in listing.stdout


def test_a_valid_sha256_commit_is_kept(probe, tmp_path):
    commit = "ab" * 32
    (tmp_path / "run_tree.py").write_text(RUN_TREE)
    env = fake_git(tmp_path, f'echo "# branch.oid {commit}"')
    result = probe(tmp_path / "run_tree.py", str(tmp_path / "exp"), env=env)
    assert result["git"] == {"git_commit": commit, "git_dirty": False, "git_error": None}
