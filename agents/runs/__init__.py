"""One training run, the application around the algorithms: its configuration
(:mod:`~textgym.agents.runs.config`), ``train()`` (:mod:`~textgym.agents.runs.training`), the
monitor callback, checkpoints and run directories, evaluation, export, the report, and the
hyperparameter registry (:mod:`~textgym.agents.runs.hyperparams`, reading
``agents/hyperparams/<algo>.yml``)."""
