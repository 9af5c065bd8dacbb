"""Gymnasium wrappers for textgym envs."""

from textgym.wrappers.kl import KLRewardWrapper, VecKLRewardWrapper
from textgym.wrappers.partners import VecPartnerBatcher

__all__ = ["KLRewardWrapper", "VecKLRewardWrapper", "VecPartnerBatcher"]
