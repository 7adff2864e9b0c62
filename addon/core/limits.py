"""Limits both sides agree on, stated once."""

from __future__ import annotations

MAX_POINTS = 5_000_000  # per result: what the panel offers, the CLI defaults to, the ops enforce
