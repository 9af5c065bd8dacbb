"""The documentation's code runs (STYLE.md, habit 17), and the site's pages are all reachable.

Every ```python block of README.md and docs/**/*.md (the generated pages under docs/_generated/
too: the generators run first, as the docs build runs them) is one test, named by its file and
first line (``README.md:L9``). The blocks of one file run in order in one namespace, in a
temporary working directory of their own, as a reader would run them: a later block uses the
names an earlier one defined. A block that must not run here (it needs a GPU, torchrun, the hub)
belongs in a ```text or ```console block instead.

Blocks are written as a user would write them (the default model, real budgets). Before a block
runs, its syntax tree (so line numbers stay the page's) gets these substitutions, and no others:

1. The tiny model (``model="tiny"``, a randomly initialised 2-layer model with the default
   tokenizer) instead of any other:
   - every ``model=`` keyword whose value is a string literal;
   - ``gym.make(...)`` / ``gymnasium.make(...)`` and ``TrainConfig(...)``: ``model="tiny"``
     (``TrainConfig`` also gets the registry's ``profile="quick"`` and 4 evaluation prompts,
     where the block leaves them out: :data:`TRAIN_CONFIG`);
   - ``make_vec_env(...)``: ``env_kwargs`` gains ``"model": "tiny"``;
   - the constructor of an algorithm (SB3's ``PPO``, ``A2C``, ``DQN``, ``MaskablePPO``;
     ``TextPPO``, ``GRPO``, ``RLOO``, ``REINFORCE``, ``SoftQ``): ``policy_kwargs`` gains
     ``"model": "tiny"``;
   - the first argument of ``load_model``, ``load_tokenizer`` and ``evaluate``, when it is a
     string literal (a model name).
2. Small budgets (:data:`CAPS`):
   - a keyword named in ``CAPS`` (``total_timesteps``, ``n_steps``, ``n_epochs``, ``n_envs``,
     ``batch_episodes``, ``max_new_tokens``, ...) becomes ``min(<its value>, cap)``, and so do
     ``learn()``'s first positional argument and ``evaluate()``'s ``n`` (4 prompts);
   - ``gym.make(...)`` and ``make_vec_env``'s ``env_kwargs`` get ``max_new_tokens=8`` where the
     block leaves it out;
   - PPO and TextPPO's family get ``n_epochs=1``, and TextPPO's family and SoftQ get
     ``batch_episodes`` and ``minibatch_episodes`` at their caps, where the block leaves them
     out; in a call with ``group_size=G`` those caps are at least ``G`` (minibatches are whole
     groups).

A block that matches none of these runs as written, so it must be fast by itself.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TINY = "tiny"
EPISODIC = {"TextPPO", "GRPO", "RLOO", "REINFORCE", "SoftQ"}  # batches of whole episodes
ALGORITHMS = {"PPO", "A2C", "DQN", "MaskablePPO", *EPISODIC}
EPOCHS = {"PPO", "MaskablePPO", "TextPPO", "GRPO", "RLOO", "REINFORCE"}  # those with n_epochs
CAPS = {
    "max_new_tokens": 8,  # gym.make(...) and make_vec_env's env_kwargs get it where not given
    "total_timesteps": 16,
    "n_steps": 8,
    "n_epochs": 1,
    "n_envs": 2,
    "batch_episodes": 4,
    "minibatch_episodes": 2,
    "gradient_steps": 2,
    "train_freq": 8,  # an off-policy algorithm collects this many steps before it checks the budget
    "budget_tokens": 64,
    "eval_prompts": 4,
    "eval_every_prompts": 4,
}
# TrainConfig(...) gets these where the block leaves them out: the registry's quick profile
# (small batches) and few evaluation prompts.
TRAIN_CONFIG = {"profile": "quick", "eval_prompts": 4, "eval_every_prompts": 4}
GROUP_CAPPED = {"batch_episodes", "minibatch_episodes"}
EVALUATE_N = 4  # evaluate()'s prompts (n=, or its fourth argument)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", DOCS / "_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_generators() -> None:
    """What the docs build does first (docs/conf.py): every generator writes its fragments."""
    for script in sorted((DOCS / "_scripts").glob("gen_*.py")):
        load_script(script.stem).generate(DOCS)


# --- finding the blocks ----------------------------------------------------------------------

FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(first code line, code)`` of every fenced block tagged ``python`` (or ``py``); blocks
    nested in a longer fence (a Markdown example) are not code."""
    blocks, lines = [], path.read_text().splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match["fence"], match["info"].strip().split()
        body, j = [], i + 1
        while j < len(lines):
            close = FENCE.match(lines[j])
            if (
                close
                and close["fence"][0] == fence[0]
                and len(close["fence"]) >= len(fence)
                and not close["info"].strip()
            ):
                break
            body.append(lines[j])
            j += 1
        if info and info[0] in ("python", "py"):
            blocks.append((i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


def doc_files() -> list[Path]:
    pages = [p for p in sorted(DOCS.rglob("*.md")) if "_build" not in p.relative_to(DOCS).parts]
    return [ROOT / "README.md", *pages]


run_generators()
BLOCKS = [(path, line, code) for path in doc_files() for line, code in python_blocks(path)]


def block_id(block: tuple[Path, int, str]) -> str:
    return f"{block[0].relative_to(ROOT)}:L{block[1]}"


# --- the substitutions -----------------------------------------------------------------------


def _name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def _keyword(call: ast.Call, name: str) -> ast.keyword | None:
    return next((k for k in call.keywords if k.arg == name), None)


def _merge_dict(call: ast.Call, name: str, forced: dict, capped: dict) -> None:
    """``name=`` gets the ``forced`` items and, capped, the ``capped`` ones: a dict literal is
    edited key by key; any other value ``v`` becomes ``{**v, <forced>, <capped>}``."""
    given = _keyword(call, name)
    if given is not None and isinstance(given.value, ast.Dict):
        literal = given.value
        keys = [k.value if isinstance(k, ast.Constant) else None for k in literal.keys]
        for key, value in {**forced, **capped}.items():
            if key in keys:
                i = keys.index(key)
                old = literal.values[i]
                literal.values[i] = _cap(old, ast.Constant(value)) if key in capped else ast.Constant(value)
            else:
                literal.keys.append(ast.Constant(key))
                literal.values.append(ast.Constant(value))
        return
    items = {**forced, **capped}
    tiny = ast.Dict(keys=[ast.Constant(k) for k in items], values=[ast.Constant(v) for v in items.values()])
    if given is None:
        call.keywords.append(ast.keyword(arg=name, value=tiny))
    else:
        given.value = ast.Dict(keys=[None, *tiny.keys], values=[given.value, *tiny.values])


def _cap(value: ast.expr, cap: ast.expr) -> ast.expr:
    return ast.Call(func=ast.Name("min", ast.Load()), args=[value, cap], keywords=[])


class Substitute(ast.NodeTransformer):
    """The substitutions of the module docstring, applied to every call of a block."""

    def visit_Call(self, call: ast.Call) -> ast.Call:
        self.generic_visit(call)
        name = _name(call.func)
        for keyword in call.keywords:
            if (
                keyword.arg == "model"
                and isinstance(keyword.value, ast.Constant)
                and isinstance(keyword.value.value, str)
            ):
                keyword.value = ast.Constant(TINY)
        is_gym_make = (
            name == "make"
            and isinstance(call.func, ast.Attribute)
            and _name(call.func.value) in ("gym", "gymnasium")
        )
        if (is_gym_make or name == "TrainConfig") and _keyword(call, "model") is None:
            call.keywords.append(ast.keyword(arg="model", value=ast.Constant(TINY)))
        if name == "TrainConfig":
            for key, value in TRAIN_CONFIG.items():
                if _keyword(call, key) is None:
                    call.keywords.append(ast.keyword(arg=key, value=ast.Constant(value)))
        if name == "make_vec_env":
            _merge_dict(call, "env_kwargs", {"model": TINY}, {"max_new_tokens": CAPS["max_new_tokens"]})
        if name in ALGORITHMS:
            _merge_dict(call, "policy_kwargs", {"model": TINY}, {})
        if name in EPOCHS and _keyword(call, "n_epochs") is None:  # SB3 PPO's default is 10
            call.keywords.append(ast.keyword(arg="n_epochs", value=ast.Constant(CAPS["n_epochs"])))
        if name in EPISODIC:  # small batches even where the block keeps the defaults
            for key in GROUP_CAPPED:
                if _keyword(call, key) is None:
                    call.keywords.append(ast.keyword(arg=key, value=ast.Constant(CAPS[key])))
        if name in ("load_model", "load_tokenizer", "evaluate") and call.args:
            first = call.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                call.args[0] = ast.Constant(TINY)
        group = _keyword(call, "group_size")
        for keyword in call.keywords:
            if keyword.arg in CAPS:
                cap: ast.expr = ast.Constant(CAPS[keyword.arg])
                if group is not None and keyword.arg in GROUP_CAPPED:
                    cap = ast.Call(func=ast.Name("max", ast.Load()), args=[cap, group.value], keywords=[])
                keyword.value = _cap(keyword.value, cap)
        if is_gym_make and _keyword(call, "max_new_tokens") is None:
            cap = ast.Constant(CAPS["max_new_tokens"])
            call.keywords.append(ast.keyword(arg="max_new_tokens", value=cap))
        if name == "learn" and call.args:
            call.args[0] = _cap(call.args[0], ast.Constant(CAPS["total_timesteps"]))
        if name == "evaluate":
            if len(call.args) >= 4:  # evaluate(policy, env_id, split, n)
                call.args[3] = _cap(call.args[3], ast.Constant(EVALUATE_N))
            n = _keyword(call, "n")
            if n is not None:
                n.value = _cap(n.value, ast.Constant(EVALUATE_N))
        return call


def compile_block(path: Path, line: int, code: str):
    """The block with the substitutions, compiled with the page's file name and line numbers."""
    tree = ast.parse(code, filename=str(path))
    tree = ast.fix_missing_locations(Substitute().visit(tree))
    ast.increment_lineno(tree, line - 1)
    return compile(tree, str(path), "exec")


def test_substitutions():
    code = (
        'env = gym.make("TextGen-Sentiment-v0")\n'
        'venv = make_vec_env("TextGen-Sentiment-v0", n_envs=16, env_kwargs={"max_new_tokens": 32})\n'
        'agent = GRPO("LMPolicy", env, batch_episodes=64, minibatch_episodes=16, group_size=8)\n'
        "agent.learn(total_timesteps=20_000)\n"
        'result = evaluate("smollm2-135m-instruct", "TextGen-Sentiment-v0", "test", 64)\n'
    )
    tree = ast.fix_missing_locations(Substitute().visit(ast.parse(code)))
    text = ast.unparse(tree)
    assert "gym.make('TextGen-Sentiment-v0', model='tiny', max_new_tokens=8)" in text
    assert "n_envs=min(16, 2), env_kwargs={'max_new_tokens': min(32, 8), 'model': 'tiny'}" in text
    assert "batch_episodes=min(64, max(4, 8)), minibatch_episodes=min(16, max(2, 8))" in text
    assert "policy_kwargs={'model': 'tiny'}" in text
    assert "total_timesteps=min(20000, 16)" in text
    assert "evaluate('tiny', 'TextGen-Sentiment-v0', 'test', min(64, 4))" in text
    # a block with none of these runs as written
    plain = "x = sorted([3, 1, 2])\n"
    assert ast.unparse(Substitute().visit(ast.parse(plain))) == ast.unparse(ast.parse(plain))


# --- running them ----------------------------------------------------------------------------


class FileState:
    """One file's namespace and working directory, and how far its blocks have run."""

    def __init__(self, workdir: Path):
        self.namespace: dict = {"__name__": "__main__"}
        self.workdir = workdir
        self.ran = 0  # blocks run so far
        self.failed: str | None = None  # the id of the first block that failed


STATES: dict[Path, FileState] = {}


def _run(state: FileState, path: Path, line: int, code: str, monkeypatch) -> None:
    with monkeypatch.context() as patch:
        patch.chdir(state.workdir)
        exec(compile_block(path, line, code), state.namespace)


@pytest.mark.parametrize("block", BLOCKS, ids=[block_id(b) for b in BLOCKS])
def test_code_block_runs(block, tmp_path_factory, monkeypatch):
    path, line, code = block
    if path not in STATES:
        STATES[path] = FileState(tmp_path_factory.mktemp(path.stem))
    state = STATES[path]
    mine = [b for b in BLOCKS if b[0] == path]
    index = next(i for i, b in enumerate(mine) if b[1] == line)
    for earlier in mine[state.ran : index]:  # run alone (-k): the earlier blocks run first
        if state.failed is None:
            try:
                _run(state, *earlier, monkeypatch)
            except Exception:
                state.failed = block_id(earlier)
        state.ran += 1
    if state.failed is not None:
        pytest.skip(f"an earlier block of this file failed: {state.failed}")
    state.ran = index + 1
    try:
        _run(state, path, line, code, monkeypatch)
    except Exception:
        state.failed = block_id(block)
        raise


# --- the site's structure ----------------------------------------------------------------------

TOCTREE = re.compile(r"^(`{3,}|:{3,})\{toctree\}[^\n]*\n(.*?)^\1\s*$", re.M | re.S)


def pages() -> list[str]:
    """Every page of the site (a docname: the path under docs/ without ``.md``)."""
    skip = {"_build", "_generated", "_scripts"}
    return [
        p.relative_to(DOCS).with_suffix("").as_posix()
        for p in sorted(DOCS.rglob("*.md"))
        if not skip & set(p.relative_to(DOCS).parts)
    ]


def toctree_entries(docname: str) -> set[str]:
    text = (DOCS / f"{docname}.md").read_text()
    folder = Path(docname).parent
    entries = set()
    for _, body in TOCTREE.findall(text):
        for entry in body.splitlines():
            entry = entry.strip()
            if not entry or entry.startswith(":"):
                continue
            target = entry.split("<")[-1].rstrip(">").strip() if "<" in entry else entry
            entries.add((folder / target).as_posix().removesuffix(".md").removeprefix("./"))
    return entries


def test_every_page_is_in_a_toctree():
    listed = {entry for page in pages() for entry in toctree_entries(page)}
    orphans = [page for page in pages() if page != "index" and page not in listed]
    assert not orphans, f"pages in no toctree (add them to one): {orphans}"
    missing = sorted(entry for entry in listed if entry not in pages())
    assert not missing, f"toctree entries with no page: {missing}"


def test_every_env_has_a_page():
    import textgym

    for env_id in textgym.ENVS:
        page = DOCS / "envs" / f"{env_id}.md"
        assert page.exists(), f"no page for {env_id}: add {page.relative_to(ROOT)}"
        assert f"_generated/envs/{env_id}.md" in page.read_text()


def test_each_env_version_writes_its_own_tuning_fragments():
    """``confirm-<algo>-<task>.md`` and ``tuning-<algo>-<task>.md`` are named by the env's task:
    two versions of one task (Dialogue v0 and v1) must not overwrite each other's."""
    import textgym

    names = [load_script("gen_tuning").task(env_id) for env_id in textgym.ENVS]
    assert len(set(names)) == len(names), names


def test_the_api_page_names_every_public_agent():
    import textgym.agents

    text = (DOCS / "api.md").read_text()
    missing = [name for name in textgym.agents.__all__ if f"textgym.agents.{name}\n" not in text]
    assert not missing, f"docs/api.md does not document {missing}"


def test_readme_leaderboard_block_is_generated():
    results = load_script("gen_results")
    text = (ROOT / "README.md").read_text()
    if results.README_START not in text:
        pytest.skip(f"README.md has no {results.README_START} ... {results.README_END} block yet")
    block = text.split(results.README_START, 1)[1].split(results.README_END, 1)[0]
    assert block.strip() == results.readme_top_rows().strip(), (
        "README.md's leaderboard block differs from the records: "
        "run python docs/_scripts/gen_results.py --readme"
    )


@pytest.mark.parametrize("path", ["README.md", "docs/algorithms/grpo.md"])
def test_the_grpo_dialogue_examples_use_the_registrys_values(path):
    """The answer to "how do I train GRPO on Dialogue" uses the registry's values, so the example
    cannot drift from ``agents/hyperparams/grpo.yml``."""
    from textgym.agents.runs.hyperparams import hyperparams

    registry = hyperparams("grpo", "TextGen-Dialogue-v0")
    calls = [
        node
        for _, code in python_blocks(ROOT / path)
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Call) and _name(node.func) == "GRPO"
    ]
    assert calls, f"{path} has no GRPO(...) example"
    for call in calls:
        given = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg in registry}
        assert given and given == {k: registry[k] for k in given}, (given, registry)
