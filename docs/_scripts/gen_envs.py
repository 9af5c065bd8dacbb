"""Env pages from the env classes' docstrings (as Gymnasium's docs/_scripts/gen_mds.py does).

Writes ``docs/_generated/envs/<env-id>.md`` (one page body per registered env: the registered
kwargs and their defaults, a short example, then the class docstring's sections) and
``docs/_generated/envs/index.md`` (the catalogue table). ``docs/envs/<env-id>.md`` includes its
fragment, so a page cannot drift from the docstring; tests/test_docs.py checks every registered
env has its page.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import gymnasium as gym

import textgym
from textgym.envs import ENVS
from textgym.models import DEFAULT_MODEL

# reST roles of the docstrings as MyST roles: :class:`x` -> {class}`x`
ROLE = re.compile(r":(class|func|meth|mod|attr|data|exc|obj):`([^`]+)`")


def docstring_markdown(cls: type) -> str:
    """The class docstring as Markdown: its ``## Section`` headings kept, reST roles as MyST's."""
    text = inspect.cleandoc(cls.__doc__ or "")
    return ROLE.sub(r"{\1}`\2`", text)


def registered_kwargs(env_id: str) -> dict[str, object]:
    """The registered kwargs that shape the task, from the registry entry and the task defaults."""
    spec = gym.registry[env_id]
    defaults = ENVS[env_id].defaults
    names = ("max_prompt_tokens", "max_new_tokens", "reward", "dataset", "dataset_kwargs", "chat_template")
    values = {name: getattr(defaults, name) for name in names}
    values.update({k: v for k, v in spec.kwargs.items() if k in names})  # a registered override wins
    return values


def env_page(env_id: str) -> str:
    cls = ENVS[env_id]
    spec = gym.registry[env_id]
    task = cls.defaults
    rows = "\n".join(f"| `{name}` | `{value!r}` |" for name, value in registered_kwargs(env_id).items())
    return f"""# {env_id}

{task.description}. Entry point `{spec.entry_point}`; the task's metrics: {", ".join(task.metrics) or "-"}.

| registered kwarg | default |
|---|---|
{rows}

Every one of them, and the model (`model="{DEFAULT_MODEL}"` by default), can be changed
through `gym.make` keyword arguments (see {{class}}`textgym.envs.TextGenEnv`).

```python
import gymnasium as gym
import textgym  # registers the envs

env = gym.make("{env_id}")
obs, info = env.reset(seed=0)
obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
```

{docstring_markdown(cls)}
"""


def catalogue() -> str:
    lines = ["| id | task | dataset | reward | prompt / new tokens |", "|---|---|---|---|---|"]
    for env_id, cls in ENVS.items():
        task = cls.defaults
        lines.append(
            f"| [{env_id}]({env_id}.md) | {task.description} | `{task.dataset}` | `{task.reward_label}` "
            f"| {task.tokens_label} |"
        )
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Write only when the text changed, so Sphinx does not re-read unchanged pages."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def generate(docs: Path) -> None:
    folder = docs / "_generated" / "envs"
    for env_id in textgym.ENVS:
        write(folder / f"{env_id}.md", env_page(env_id))
    write(folder / "index.md", catalogue())


if __name__ == "__main__":
    generate(Path(__file__).resolve().parents[1])
