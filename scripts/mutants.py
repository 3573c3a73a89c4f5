"""`make mutants`: break one security rule at a time and check that a test notices.

Each mutant in `tests/mutants.toml` is one small edit (`find` → `replace`, in one file)
that undoes one rule: PKCE, exact redirect matching, refresh rotation, and so on. For
each, this script applies the edit to a scratch copy of the repository, runs the tests
the mutant names there, and expects them to fail. A mutant whose tests pass *survived*:
the suite would not notice that rule breaking, and the command fails, naming it.

A plain script rather than mutmut or cosmic-ray: those generate thousands of blind
operator swaps and run the whole suite against each, which takes hours here (most tests
drive real servers). A short list of reviewed, named mutants, each run against the few
tests that cover its rule, stays readable and takes minutes.

Before the mutants, the union of their tests runs once on the unchanged copy, so a
test that fails anyway cannot pass for a kill.

    python scripts/mutants.py            # every mutant
    python scripts/mutants.py pkce-plain # the named ones
    python scripts/mutants.py --list
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "tests" / "mutants.toml"
#: one mutant's tests may not take longer than this (seconds)
TIMEOUT = 300
PYTEST = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-p", "no:randomly"]


@dataclass(frozen=True)
class Mutant:
    name: str
    rule: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


@dataclass
class Outcome:
    mutant: Mutant
    verdict: str  # killed, SURVIVED, ERROR
    seconds: float
    detail: str = ""


def load(path: Path = MUTANTS) -> list[Mutant]:
    entries = tomllib.loads(path.read_text())["mutant"]
    mutants = [Mutant(e["name"], e["rule"], e["file"], e["find"], e["replace"], tuple(e["tests"])) for e in entries]
    names = [m.name for m in mutants]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise SystemExit(f"mutants.toml: names used twice: {', '.join(sorted(duplicates))}")
    return mutants


def check(mutant: Mutant, root: Path) -> str | None:
    """Why the mutant cannot be applied (its `find` must occur exactly once), or None."""
    path = root / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    if mutant.find == mutant.replace:
        return "find and replace are the same"
    found = path.read_text().count(mutant.find)
    if found != 1:
        return f"`find` occurs {found} times in {mutant.file} (must be exactly once: update the mutant)"
    for test in mutant.tests:
        file, _, function = test.partition("::")
        if not (root / file).is_file():
            return f"{test}: no such test file"
        if function and f"def {function.split('[')[0]}(" not in (root / file).read_text():
            return f"{test}: no such test"
    return None


def scratch_copy(destination: Path) -> Path:
    """The repository's files (tracked and new, not ignored) copied to `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / os.fsdecode(name)
        if source.is_file():
            target = destination / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_tests(root: Path, tests: list[str], extra: list[str] | None = None) -> tuple[int, str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        done = subprocess.run(
            [*PYTEST, *(extra or []), *tests],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {TIMEOUT} s"
    return done.returncode, done.stdout[-3000:] + done.stderr[-2000:]


def try_mutant(mutant: Mutant, root: Path) -> Outcome:
    started = time.monotonic()
    path = root / mutant.file
    original = path.read_text()
    path.write_text(original.replace(mutant.find, mutant.replace, 1))
    try:
        code, output = run_tests(root, list(mutant.tests))
    finally:
        path.write_text(original)
    seconds = time.monotonic() - started
    if code == 1:
        failed = [line for line in output.splitlines() if line.startswith("FAILED")]
        return Outcome(mutant, "killed", seconds, failed[0][7:] if failed else "")
    if code == 0:
        return Outcome(mutant, "SURVIVED", seconds, "every test passed with the rule broken")
    # 2: interrupted (a collection error), 3: internal error, 4: usage, 5: no tests.
    last = output.strip().splitlines()[-1:] or [""]
    return Outcome(mutant, "ERROR", seconds, f"pytest exited {code}: {last[0]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="run only these mutants")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="mutants run at once (default 2)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the run on the unchanged copy")
    args = parser.parse_args(argv)

    mutants = load()
    if args.list:
        for m in mutants:
            print(f"{m.name:40} {m.rule}")
        return 0
    if args.names:
        unknown = set(args.names) - {m.name for m in mutants}
        if unknown:
            print(f"no such mutant: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.name in args.names]

    problems = [(m.name, why) for m in mutants if (why := check(m, ROOT))]
    for name, why in problems:
        print(f"mutant {name}: {why}", file=sys.stderr)
    if problems:
        return 2

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutants-") as scratch:
        copies = [scratch_copy(Path(scratch) / f"copy{i}") for i in range(max(1, args.jobs))]
        if not args.no_baseline:
            union = sorted({t for m in mutants for t in m.tests})
            code, output = run_tests(copies[0], union, ["-n", str(len(copies))] if len(copies) > 1 else [])
            if code != 0:
                print(output, file=sys.stderr)
                print("the mutants' tests fail on the unchanged code; fix them first", file=sys.stderr)
                return 1
            print(f"baseline: {len(union)} tests pass on the unchanged code ({time.monotonic() - started:.0f} s)")

        work: queue.Queue[Mutant] = queue.Queue()
        for m in mutants:
            work.put(m)
        outcomes: list[Outcome] = []
        lock = threading.Lock()

        def worker(root: Path) -> None:
            while True:
                try:
                    mutant = work.get_nowait()
                except queue.Empty:
                    return
                outcome = try_mutant(mutant, root)
                with lock:
                    outcomes.append(outcome)
                    line = f"{outcome.verdict:8} {mutant.name:40} {outcome.seconds:5.1f} s  {outcome.detail}"
                    print(line, flush=True)

        threads = [threading.Thread(target=worker, args=(root,)) for root in copies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    bad = [o for o in outcomes if o.verdict != "killed"]
    print(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} mutants killed in {time.monotonic() - started:.0f} s")
    for o in sorted(bad, key=lambda o: o.mutant.name):
        print(f"{o.verdict}: {o.mutant.name} ({o.mutant.rule}) in {o.mutant.file}: {o.detail}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
