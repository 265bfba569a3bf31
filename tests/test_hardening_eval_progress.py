"""`omnimodel eval` shows episodes k/N with the running success rate while it runs."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from omnimodel import eval as ev


class CoinEnv:
    """Ends after one step; succeeds when the seed is even (so the running rate moves)."""

    def reset(self, seed):
        self.seed = seed
        return {}, {}

    def step(self, action):
        return {}, 0.0, True, False, {"success": self.seed % 2 == 0}


def _prepare(obs):
    return [np.zeros((224, 224, 3), np.uint8)] * 2, np.zeros(8)


class ZeroPolicy:
    def predict_action(self, images, proprio, instruction):
        return np.zeros((8, 7))


def test_plain_lines_off_a_terminal_count_episodes_and_rate():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    outcomes = [True, False, True, True] * 10
    with ev.EpisodeProgress(len(outcomes), "eval", console=console) as p:
        for ok in outcomes:
            p.episode(ok)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 20, lines  # every 5% of 40 episodes
    assert lines[0] == "eval: episodes 2/40, success 50% (1/2)"
    assert lines[-1] == "eval: episodes 40/40, success 75% (30/40)"


def test_terminal_gets_one_updating_line_and_a_final_summary():
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with ev.EpisodeProgress(3, "eval", console=console) as p:
        for ok in (True, False, False):
            p.episode(ok)
    out = buf.getvalue()
    assert "\r" in out or "\x1b[" in out, "no live redraw on a terminal"
    assert out.rstrip().endswith("eval: episodes 3/3, success 33% (1/3)")


def test_closed_loop_eval_reports_progress_off_a_terminal(capsys):
    tasks = [ev.EvalTask("suite_a", f"t{i}", "go", 5, CoinEnv, prepare=_prepare) for i in range(2)]
    res = ev.evaluate_closed_loop(ZeroPolicy(), tasks, episodes_per_task=3, seed=0)
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        f"closed-loop eval: episodes 6/6, success {res.success_per_suite['suite_a']:.0%} "
        f"({sum(r['success'] for r in res.per_episode)}/6)"
    )
    assert len(err) == 6 and err[0].startswith("closed-loop eval: episodes 1/6")
    quiet = ev.evaluate_closed_loop(ZeroPolicy(), tasks, episodes_per_task=3, seed=0, show_progress=False)
    assert capsys.readouterr().err == "" and quiet.per_episode == res.per_episode
