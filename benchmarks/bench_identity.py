"""Code identity benchmark (issue 10): a recipe whose code reaches 50 user functions.

    python benchmarks/bench_identity.py [--functions 50] [--repeat 5]

The recipe's ``run`` calls the first of ``--functions`` functions of a user module (which
imports numpy and torch); each function reads a module constant, calls the next ones and uses
numpy. Targets, each a ratio to a floor measured in the same run:

* first call, in a fresh process (every source file read, parsed and normalised, every code
  object scanned, library versions looked up) <= 3x ``inspect.getsource`` + ``ast.parse`` of
  the same functions in a fresh process;
* cached call (the code analysis is cached; every global, class attribute, cell and default is
  read again to see an edit) <= 15x a loop that only looks each global of each function up in
  its module's dict.
"""

from __future__ import annotations

import argparse
import ast
import dis
import inspect
import json
import os
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import best_of, report, run_phase

MODULE = "identity_bench_module"


def write_module(folder: Path, functions: int) -> Path:
    """A user module: ``functions`` functions in a call tree, each reading a constant."""
    parts = [
        "import numpy as np",
        "import torch",
        "import dagger as dg",
        "",
    ]
    for index in range(functions):
        callees = [n for n in (2 * index + 1, 2 * index + 2) if n < functions]
        calls = " + ".join(f"f{n}(x)" for n in callees) or "0.0"
        parts.append(
            textwrap.dedent(
                f'''
                SCALE_{index} = {index}.5


                def f{index}(x):
                    """Function {index} of the call tree."""
                    # a comment, which does not count
                    y = x * SCALE_{index} + np.pi
                    return y + {calls}
                '''
            )
        )
    parts.append(
        textwrap.dedent(
            """
            class Deep(dg.Recipe):
                FACTOR = 2.0

                def __init__(self, amount):
                    self.amount = amount

                def run(self, state):
                    state.value = f0(state.value) * self.FACTOR + torch.ones(1).item()
                    return state
            """
        )
    )
    path = folder / f"{MODULE}.py"
    path.write_text("\n".join(parts))
    return path


def import_module(folder: Path) -> object:
    sys.path.insert(0, str(folder))
    import importlib

    return importlib.import_module(MODULE)


def phase(args: argparse.Namespace) -> None:
    module = import_module(Path(args.directory))
    functions = [getattr(module, f"f{index}") for index in range(args.functions)]
    if args.phase == "first":
        import dagger as dg
        from dagger.fingerprint import code_identity

        started = time.perf_counter()
        identity = code_identity(module.Deep, dg.Recipe)  # type: ignore[attr-defined]
        seconds = time.perf_counter() - started
        reached = sum(entry.kind == "function" for entry in identity.manifest)
        assert reached == args.functions, reached
    elif args.phase == "floor-first":
        started = time.perf_counter()
        for function in [*functions, module.Deep.run]:  # type: ignore[attr-defined]
            ast.parse(textwrap.dedent(inspect.getsource(function)))
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds}))


def cached_rows(folder: Path, functions_count: int, repeat: int) -> tuple[float, float]:
    """Seconds per cached call, and per floor loop, in this process."""
    import dagger as dg
    from dagger.fingerprint import code_identity

    module = import_module(folder)
    functions = [getattr(module, f"f{index}") for index in range(functions_count)]
    recipe = module.Deep  # type: ignore[attr-defined]
    code_identity(recipe, dg.Recipe)
    # The floor: look each global every function reads up in its module's dict.
    reads = [
        (
            function.__globals__,
            [i.argval for i in dis.get_instructions(function) if i.opname == "LOAD_GLOBAL"],
        )
        for function in functions
    ]
    calls = 500

    def identity_loop() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            code_identity(recipe, dg.Recipe)
        return (time.perf_counter() - started) / calls

    def floor_loop() -> float:
        started = time.perf_counter()
        for _ in range(calls):
            for namespace, names in reads:
                for name in names:
                    namespace.get(name)
        return (time.perf_counter() - started) / calls

    return best_of(repeat, identity_loop), best_of(repeat, floor_loop)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--functions", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--phase")
    parser.add_argument("--directory")
    args = parser.parse_args()
    if args.phase:
        phase(args)
        return 0

    script = Path(__file__)
    with tempfile.TemporaryDirectory(dir=os.environ.get("DAGGER_BENCH_DIR")) as scratch:
        folder = Path(scratch)
        write_module(folder, args.functions)

        def timed(phase_name: str) -> float:
            return best_of(
                args.repeat,
                lambda: run_phase(
                    script,
                    "--phase",
                    phase_name,
                    "--directory",
                    str(folder),
                    "--functions",
                    str(args.functions),
                )["seconds"],
            )

        first, first_floor = timed("first"), timed("floor-first")
        cached, cached_floor = cached_rows(folder, args.functions, args.repeat)
    n = args.functions
    rows = [
        row(f"first call, {n} functions, fresh process (s)", first, first_floor, 3.0),
        row(f"cached call, {n} functions (s)", cached, cached_floor, 15.0),
    ]
    return 0 if report("identity", rows) else 1


def row(measure: str, value: float, floor: float, limit: float | None) -> dict:
    return {
        "measure": measure,
        "value": value,
        "floor": floor,
        "ratio": value / floor,
        "limit": limit,
    }


if __name__ == "__main__":
    sys.exit(main())
