"""Gymnasium wrappers for textgym envs."""

from textgym.wrappers.kl import KLRewardWrapper

__all__ = ["KLRewardWrapper"]
