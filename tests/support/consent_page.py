"""Helpers shared by tests/{e2e,http,unit}/test_consent_page.py."""

from __future__ import annotations

#: a name with a right-to-left override (and an isolate) in it: unneutralised, the
#: override (never closed) would show "Code" reversed and carry the rest of the
#: heading with it
BIDI_NAME = "Evil \u2067x\u2069 \u202eedoC Notes"
BIDI_NAME_SHOWN = "Evil [U+2067]x[U+2069] [U+202E]edoC Notes"
