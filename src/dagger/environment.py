"""The environment a state is computed in, and how two environments differ.

:func:`capture_environment` returns a JSON-serialisable dict, meant to be stored in each state's
record, of what can change a computation's result without changing its code: the interpreter,
the platform and host, the versions of dagger, numpy and torch, the CUDA devices, the settings
that make GPU and threaded computations deterministic, and the user's git commit.
:func:`environment_changes` turns two such dicts into lines such as ``"torch 2.3.0 -> 2.4.1"``.

Cost: what cannot change within a process (interpreter, platform, host name, installed
versions, the git commit) is looked up once per process and cached; each further call reads
only a few environment variables and, when torch is imported, a few torch flags. ``git`` is run
once per process (one ``git status``), when the first state is computed, not once per state.
torch is never imported for this: its version comes from the module when the user's code has
imported it, otherwise from the installed distribution's metadata.

Keys (a key's value is None when it does not apply, for example ``cuda`` without a GPU):

================================  ========================================================
``python``                        ``platform.python_version()``, e.g. ``"3.11.9"``
``python_implementation``         ``"CPython"``, ``"PyPy"``, ...
``platform``                      ``platform.platform()``, e.g. ``"Linux-6.1.0-x86_64-..."``
``hostname``                      ``socket.gethostname()``
``dagger``, ``numpy``, ``torch``  versions (``torch``: ``torch.__version__`` when imported)
``cuda``                          CUDA version torch was built with, when a GPU is usable
``cuda_devices``                  names of the visible CUDA devices once the process has
                                  initialised CUDA (a list; empty before, or without a GPU:
                                  naming them would initialise CUDA)
``device``                        what the process computes on: the name of the current CUDA
                                  device once torch has initialised CUDA
                                  (``torch.cuda.get_device_name``), else ``"cpu"``
``cudnn``                         cuDNN version (an int, e.g. ``90100``), when a GPU is usable
``cudnn_benchmark``               ``torch.backends.cudnn.benchmark``, when a GPU is usable
``torch_deterministic``           ``torch.are_deterministic_algorithms_enabled()``
``torch_threads``                 ``torch.get_num_threads()`` (CPU reductions depend on it)
``git_commit``                    ``HEAD`` of the repository holding the ``__main__`` script
                                  (the current directory when there is no script file)
``git_dirty``                     True when tracked files differ from ``HEAD``; untracked
                                  files (outputs, the experiment directory) do not count
``git_error``                     why there is no commit: ``git`` not installed, no
                                  repository, no commit yet, ``git`` failed or timed out
``env``                           ``CUBLAS_WORKSPACE_CONFIG``, ``PYTHONHASHSEED``,
                                  ``OMP_NUM_THREADS``, ``CUDA_VISIBLE_DEVICES`` (None: unset)
================================  ========================================================
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._version import __version__

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "GIT_KEYS",
    "TABLE_KEYS",
    "capture_environment",
    "device_name",
    "environment_changes",
    "git_facts",
]

# The variables that change what a computation does without changing its code: cuBLAS's
# deterministic workspace, the hash seed (set and dict order), the thread counts of CPU
# reductions, and which GPUs a process sees.
ENVIRONMENT_VARIABLES = (
    "CUBLAS_WORKSPACE_CONFIG",
    "PYTHONHASHSEED",
    "OMP_NUM_THREADS",
    "CUDA_VISIBLE_DEVICES",
)

# What a commit id looks like: SHA-1 (40 hex digits) or SHA-256 (64) object names. Anything
# else `git` printed (a broken wrapper, garbage, terminal escapes) is not stored or shown.
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")

# A repository so large or a disk so slow that `git status` takes longer is reported as such
# rather than holding up the run.
GIT_TIMEOUT_SECONDS = 10.0


#: The keys tables show, as ``env.<key>`` columns (the rest stays in the record).
TABLE_KEYS = ("python", "torch", "cuda", "device", "dagger", "git_commit", "git_dirty", "hostname")

#: The keys of :func:`git_facts`.
GIT_KEYS = ("git_commit", "git_dirty", "git_error")


def capture_environment(
    git_directory: str | os.PathLike[str] | None = None,
    *,
    git: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the current process computes with (see the module docstring for the keys).

    Args:
        git_directory: Where to look for the user's git repository. None (the default) takes
            the folder of the ``__main__`` script, or the current directory when there is no
            script file (notebooks, ``python -c``); a command-line tool that runs the user's
            recipes (``python -m dagger ...``) should pass the user's directory instead.
            ``git`` runs once per process for each directory.
        git: :func:`git_facts` found by another process (the coordinator of a run on an
            executor: the user's script is in its repository, not in the worker's
            ``__main__``); when given, ``git`` is not run and ``git_directory`` is ignored.

    Returns:
        A new JSON-serialisable dict each call (the caller may change it).
    """
    environment: dict[str, Any] = dict(_process_facts())
    environment["numpy"] = _library_version("numpy")
    environment["torch"] = _library_version("torch")
    environment.update(_torch_facts())
    environment["device"] = device_name()
    if git is None:
        git = git_facts(git_directory)
    environment.update({key: git.get(key) for key in GIT_KEYS})
    environment["env"] = {name: os.environ.get(name) for name in ENVIRONMENT_VARIABLES}
    return environment


def git_facts(git_directory: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """``git_commit``, ``git_dirty`` and ``git_error`` of the user's repository (see the
    module docstring), from one ``git status`` per process and directory.

    Args:
        git_directory: As for :func:`capture_environment`.

    Returns:
        A new dict of the three keys (JSON-serialisable).
    """
    try:
        directory = _script_directory() if git_directory is None else Path(git_directory).resolve()
    except OSError as missing:  # the current directory was deleted: describing must not fail
        return {"git_commit": None, "git_dirty": None, "git_error": f"no directory: {missing}"}
    commit, dirty, error = _git_status(directory)
    return {"git_commit": commit, "git_dirty": dirty, "git_error": error}


def device_name() -> str:
    """The device this process computes on: the current CUDA device's name
    (``torch.cuda.get_device_name``) once torch has initialised CUDA, else ``"cpu"``.

    Cheap enough to call for every state: torch is never imported, and CUDA is never
    initialised, for this.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return "cpu"
    try:
        if not torch.cuda.is_initialized():
            return "cpu"
        return _named_devices(int(torch.cuda.device_count()))[int(torch.cuda.current_device())]
    except Exception:  # a broken CUDA setup: the state was not computed on a GPU by torch
        return "cpu"


@functools.cache
def _process_facts() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "dagger": __version__,
    }


def _library_version(name: str) -> str | None:
    module = sys.modules.get(name)
    version = getattr(module, "__version__", None) if module is not None else None
    if isinstance(version, str):
        # A plain str: torch's is a TorchVersion, whose comparisons parse it each time.
        return str(version)
    return _installed_version(name)


@functools.cache
def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _torch_facts() -> dict[str, Any]:
    torch = sys.modules.get("torch")
    facts: dict[str, Any] = {
        "cuda": None,
        "cuda_devices": [],
        "cudnn": None,
        "cudnn_benchmark": None,
        "torch_deterministic": None,
        "torch_threads": None,
    }
    if torch is None:
        return facts
    facts.update(_cuda_facts())
    if facts["cuda"] is not None:
        facts["cuda_devices"] = _cuda_device_names()
        facts["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark)
    facts["torch_deterministic"] = bool(torch.are_deterministic_algorithms_enabled())
    facts["torch_threads"] = int(torch.get_num_threads())
    return facts


@functools.cache
def _cuda_facts() -> dict[str, Any]:
    # Library versions do not change within a process; asking is not free.
    torch = sys.modules["torch"]
    if not torch.cuda.is_available():
        return {}
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"cuda": torch.version.cuda, "cudnn": cudnn}


def _cuda_device_names() -> list[str]:
    """The visible CUDA devices' names, once the process has initialised CUDA; until then,
    none. Naming a device initialises CUDA (a context and its memory on the GPU, and a
    fork-based process pool started afterwards cannot use CUDA): dagger never does that for
    a process that computes on the CPU."""
    torch = sys.modules["torch"]
    if not torch.cuda.is_initialized():
        return []
    return list(_named_devices(int(torch.cuda.device_count())))


@functools.cache
def _named_devices(count: int) -> tuple[str, ...]:
    torch = sys.modules["torch"]
    return tuple(str(torch.cuda.get_device_name(index)) for index in range(count))


@functools.cache
def _script_directory() -> Path:
    """The folder of the ``__main__`` script; the current directory without one (notebooks,
    the interactive interpreter, ``python -c``)."""
    main = sys.modules.get("__main__")
    script = getattr(main, "__file__", None)
    if isinstance(script, str):
        path = Path(script).resolve()
        if path.is_file():
            return path.parent
    return Path.cwd()


@functools.cache
def _git_status(directory: Path) -> tuple[str | None, bool | None, str | None]:
    """(commit, dirty, why there is no commit), from one ``git status`` per process and
    directory.

    Never raises: what git says only describes a state, so a git that is missing, broken,
    slow or prints garbage is recorded as the reason there is no commit, and the state is
    computed and stored all the same.
    """
    try:
        return _run_git_status(directory)
    except Exception as error:  # describing the environment must never fail a run
        return None, None, _printable(f"git could not be asked: {type(error).__name__}: {error}")


def _run_git_status(directory: Path) -> tuple[str | None, bool | None, str | None]:
    command = [
        "git",
        # Never take the index lock: concurrent runs and the user's own git stay unaffected.
        "--no-optional-locks",
        "-C",
        str(directory),
        "status",
        "--porcelain=v2",
        "--branch",
        "--untracked-files=no",
    ]
    try:
        completed = subprocess.run(
            command,
            capture_output=True,
            # Paths in git's output may be in any encoding; undecodable bytes become U+FFFD.
            text=True,
            encoding="utf-8",
            errors="replace",
            stdin=subprocess.DEVNULL,
            timeout=GIT_TIMEOUT_SECONDS,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"},
            check=False,
        )
    except FileNotFoundError:
        return None, None, "git is not installed (no `git` on PATH)"
    except subprocess.TimeoutExpired:
        return None, None, f"`git status` in {directory} took over {GIT_TIMEOUT_SECONDS:g} s"
    except OSError as error:
        return None, None, _printable(f"git could not be run: {error}")
    if completed.returncode != 0:
        message = completed.stderr.strip().splitlines()
        first = message[0] if message else f"exit status {completed.returncode}"
        if "not a git repository" in first:
            return None, None, f"no git repository at {directory}"
        return None, None, _printable(f"`git status` in {directory} failed: {first}")
    commit = None
    dirty = False
    for line in completed.stdout.splitlines():
        if line.startswith("# branch.oid "):
            commit = line.removeprefix("# branch.oid ").strip()
        elif line and not line.startswith("#"):
            dirty = True
    if commit == "(initial)":
        return None, dirty, f"the git repository at {directory} has no commit yet"
    if commit is None:
        first_line = completed.stdout.strip().splitlines()[:1]
        said = f": it printed {_printable(first_line[0])!r}" if first_line else ""
        return None, None, f"`git status` in {directory} named no commit{said}"
    if not _COMMIT.fullmatch(commit):
        return (
            None,
            None,
            f"`git status` in {directory} named no valid commit: {_printable(commit)!r}",
        )
    return commit, dirty, None


def _printable(text: str, limit: int = 200) -> str:
    """``text`` without control characters (terminal escapes) or undecodable bytes' U+FFFD
    marks, cut to ``limit`` characters: safe to store and to print."""
    kept = "".join(c if c.isprintable() and c != "\ufffd" else "?" for c in text)
    return kept if len(kept) <= limit else kept[: limit - 3] + "..."


# -- differences ---------------------------------------------------------------------------------

_LABELS = {
    "python": "python",
    "python_implementation": "python implementation",
    "platform": "platform",
    "hostname": "hostname",
    "dagger": "dagger",
    "numpy": "numpy",
    "torch": "torch",
    "cuda": "cuda",
    "cuda_devices": "cuda devices",
    "device": "device",
    "cudnn": "cudnn",
    "cudnn_benchmark": "cudnn benchmark",
    "torch_deterministic": "torch deterministic algorithms",
    "torch_threads": "torch threads",
}
_GIT_KEYS = GIT_KEYS
_VERSION_KEYS = ("dagger", "numpy", "torch")


def environment_changes(
    first: Mapping[str, Any] | None, second: Mapping[str, Any] | None
) -> list[str]:
    """What differs between two :func:`capture_environment` dicts, one line per difference.

    Lines read ``"<what> <first> -> <second>"``: ``"torch 2.3.0 -> 2.4.1"``,
    ``"git 1a2b3c4d5e6f -> 4d5e6f7a8b9c (dirty)"``, ``"OMP_NUM_THREADS unset -> 4"``,
    ``"cuda devices NVIDIA A100 -> (none)"``. A version that differs only by a local build
    label that one side lacks (``2.4.1`` and ``2.4.1+cu121``: the second read from the module,
    the first from the installed metadata) is the same version. A key that one dict lacks
    (written by an older dagger) reads ``(not recorded)``.

    Args:
        first: The earlier environment (for example, the stored state's); None if not recorded.
        second: The later one (for example, the recomputation's).

    Returns:
        Lines in a fixed order (interpreter, host, libraries, devices, settings, git,
        environment variables, then any other key); empty when nothing differs.
    """
    if first is None or second is None:
        if first is None and second is None:
            return []
        which = "first" if first is None else "second"
        return [f"environment not recorded for the {which} state"]
    lines = []
    known = {*_LABELS, *_GIT_KEYS, "env"}
    others = [key for key in dict.fromkeys([*first, *second]) if key not in known]
    for key in [*_LABELS, "git", "env", *others]:
        if key == "git":
            lines.extend(_git_change(first, second))
        elif key == "env":
            lines.extend(_variable_changes(first.get("env"), second.get("env")))
        else:
            lines.extend(_key_change(key, first, second))
    return lines


_MISSING = object()


def _key_change(key: str, first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    if key not in first and key not in second:
        return []
    a, b = first.get(key, _MISSING), second.get(key, _MISSING)
    if a == b or (key in _VERSION_KEYS and _same_version(a, b)):
        return []
    return [f"{_LABELS.get(key, key)} {_show(a)} -> {_show(b)}"]


def _same_version(a: Any, b: Any) -> bool:
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    public_a, _, local_a = a.partition("+")
    public_b, _, local_b = b.partition("+")
    return public_a == public_b and (not local_a or not local_b)


def _git_change(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    if not any(key in first or key in second for key in _GIT_KEYS):
        return []
    if all(first.get(key) == second.get(key) for key in _GIT_KEYS):
        return []
    return [f"git {_git_text(first)} -> {_git_text(second)}"]


def _git_text(environment: Mapping[str, Any]) -> str:
    if not any(key in environment for key in _GIT_KEYS):
        return "(not recorded)"
    commit = environment.get("git_commit")
    dirty = " (dirty)" if environment.get("git_dirty") else ""
    if commit:
        return f"{commit[:12]}{dirty}"
    return f"(none: {environment.get('git_error') or 'unknown'}){dirty}"


def _variable_changes(first: Any, second: Any) -> list[str]:
    first = first if isinstance(first, Mapping) else {}
    second = second if isinstance(second, Mapping) else {}
    names = [*ENVIRONMENT_VARIABLES, *sorted(set(first) | set(second))]
    lines = []
    for name in dict.fromkeys(names):
        a, b = first.get(name), second.get(name)
        if a != b:
            lines.append(f"{name} {'unset' if a is None else a} -> {'unset' if b is None else b}")
    return lines


def _show(value: Any) -> str:
    if value is _MISSING:
        return "(not recorded)"
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) if value else "(none)"
    return str(value)
