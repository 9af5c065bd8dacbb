"""The shared machinery of every agent: the LM network and its ``policy_kwargs``
(:mod:`~textgym.agents.common.network`), the SB3 policies (:mod:`~textgym.agents.common.policies`),
the episode-aware buffers (:mod:`~textgym.agents.common.buffers`), the batched rollout and
sampler, argument checks and ``torch.distributed`` helpers. It imports no algorithm."""
