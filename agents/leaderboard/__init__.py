"""The leaderboard: every registered env x agent x seed with the same budget
(:mod:`~textgym.agents.leaderboard.config`), run one per process or as Ray tasks
(:mod:`~textgym.agents.leaderboard.runner`, :mod:`~textgym.agents.leaderboard.ray_tasks`),
recorded one JSON line per run (:mod:`~textgym.agents.leaderboard.store`) and rendered as
markdown tables and plots (:mod:`~textgym.agents.leaderboard.board`)."""
