"""Shared test set-up: an offline hub and the registered envs."""

from __future__ import annotations

import os

# Set before transformers is imported: a hub lookup fails at once instead of retrying for a
# minute on this machine, which has no route to the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import textgym  # noqa: E402,F401  (registers the envs)
