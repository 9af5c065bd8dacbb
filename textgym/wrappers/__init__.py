"""Gymnasium wrappers for textgym envs."""

from textgym.wrappers.kl import KLRewardWrapper, VecKLRewardWrapper

__all__ = ["KLRewardWrapper", "VecKLRewardWrapper"]
