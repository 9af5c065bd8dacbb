"""What a result record names so that it can be trusted later: the code, packages and machine."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess

import torch

PACKAGES = ("torch", "transformers", "gymnasium", "stable-baselines3", "textgym")


def git_commit() -> str:
    """HEAD's commit, with ``+dirty`` when tracked files differ from it ("unknown" outside git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        command = ["git", "status", "--porcelain", "--untracked-files=no"]
        status = subprocess.run(command, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def versions() -> dict[str, str]:
    return {package: importlib.metadata.version(package) for package in PACKAGES}


def machine() -> dict[str, object]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
    }
