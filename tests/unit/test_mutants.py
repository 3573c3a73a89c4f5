"""The mutant list of `make mutants` stays in step with the code: every mutant still
applies to exactly one place and names tests that exist (a refactor that moves the
code a mutant breaks fails here, in `make test`, not silently in `make mutants`)."""

from __future__ import annotations

import sys

from support.harness import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import mutants  # noqa: E402


def test_every_mutant_applies_to_one_place_and_names_existing_tests():
    listed = mutants.load()
    assert len(listed) >= 25
    problems = {m.name: why for m in listed if (why := mutants.check(m, ROOT))}
    assert problems == {}
    assert all(m.tests for m in listed)
