"""ActQuant Stage 1 on synthetic data with a known answer: HSIC independence, the greedy solver vs enumeration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from actquant_plugin.allocate import (
    TYPE_BITS,
    Matrix,
    exhaustive_allocate,
    greedy_allocate,
    layer_group,
    measure_errors,
    pareto_types,
    predicted_error,
    sensitivity,
    uniform_allocate,
)
from actquant_plugin.hsic import hsic


@pytest.mark.parametrize("rule", ["hbar", "median"])
def test_hsic_independent_near_zero_dependent_positive(rule):
    g = torch.Generator().manual_seed(0)
    n = 400
    x = torch.randn(n, 8, generator=g)
    indep = torch.randn(n, 8, generator=g)
    dep = torch.tanh(x @ torch.randn(8, 8, generator=g)) + 0.1 * torch.randn(n, 8, generator=g)
    h_ind = hsic(x, indep, rule=rule)
    h_dep = hsic(x, dep, rule=rule)
    print(f"HSIC[{rule}] independent {h_ind:.3e} dependent {h_dep:.3e}")
    assert h_dep > 0
    assert abs(h_ind) < 0.05 * h_dep, (h_ind, h_dep)
    # linear kernel on actions: a linear function of x is detected, an independent one is not
    a_dep = x[:, :3] @ torch.randn(3, 5, generator=g)
    a_ind = torch.randn(n, 5, generator=g)
    assert hsic(x, a_ind, kernel_v="linear", rule=rule) < 0.05 * hsic(x, a_dep, kernel_v="linear", rule=rule)


def test_hsic_is_symmetric_and_permutation_invariant():
    g = torch.Generator().manual_seed(1)
    u, v = torch.randn(50, 4, generator=g), torch.randn(50, 3, generator=g)
    v = v + u[:, :3]
    assert hsic(u, v) == pytest.approx(hsic(v, u), rel=1e-9)
    perm = torch.randperm(4, generator=g)
    assert hsic(u[:, perm], v) == pytest.approx(hsic(u, v), rel=1e-9)


def test_sensitivity_clamps_and_shifts():
    hx, ha = np.array([1.0, 0.2, 0.5]), np.array([0.5, 0.7, 0.5])
    assert sensitivity(hx, ha).tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert sensitivity(hx, ha, shift=True).tolist() == pytest.approx([0.0, 1.0, 0.5])
    assert sensitivity(hx, ha, alpha=0.0).tolist() == pytest.approx([0.5, 0.7, 0.5])


def test_layer_groups():
    assert layer_group("v.blk.3.attn_q.weight") == "v.blk.3"
    assert layer_group("v2.blk.0.ffn_up.weight") == "v2.blk.0"
    assert layer_group("blk.12.ffn_down.weight") == "blk.12"
    assert layer_group("token_embd.weight") == "token_embd.weight"


def _case(rng, n, grouped, ladder):
    return [
        Matrix(f"blk.{i // 2 if grouped else i}.m{i}.weight", 4096, float(rng.exponential()), list(ladder))
        for i in range(n)
    ]


def test_greedy_equals_exhaustive_on_separable_uniform_steps():
    # one matrix per layer, equal sizes, equal bit steps: greedy marginal allocation is provably optimal
    rng = np.random.default_rng(0)
    for _ in range(60):
        mats = _case(rng, int(rng.integers(2, 7)), False, ["Q4_K", "Q5_K"])
        budget = float(rng.uniform(4.5, 5.5))
        g, e = greedy_allocate(mats, budget, polish=False), exhaustive_allocate(mats, budget)
        assert g.objective == pytest.approx(e.objective, rel=1e-12)
        assert g.bpw <= budget + 1e-9


def test_greedy_matches_exhaustive_on_small_grouped_cases():
    rng = np.random.default_rng(1)
    ladder = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
    exact = 0
    trials = 100
    for t in range(trials):
        mats = _case(rng, int(rng.integers(2, 6)), t % 2 == 1, ladder)
        budget = float(rng.uniform(2.7, 6.0))
        g, e = greedy_allocate(mats, budget), exhaustive_allocate(mats, budget)
        assert g.bpw <= budget + 1e-9
        assert g.objective >= e.objective * (1 - 1e-9)
        assert g.objective <= e.objective * 1.15 + 1e-30
        exact += g.objective <= e.objective * (1 + 1e-9)
    print(f"greedy+polish optimal in {exact}/{trials} small cases")
    assert exact >= 0.95 * trials


def test_budget_is_met_closely_with_many_matrices():
    rng = np.random.default_rng(2)
    ladder = ["Q2_K", "Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K", "Q8_0"]
    mats = [Matrix(f"blk.{i // 7}.m{i}.weight", int(rng.choice([65536, 196608])), float(rng.exponential()), ladder)
            for i in range(70)]  # fmt: skip
    for budget in (2.7, 3.0, 3.5, 4.0, 5.0):
        a = greedy_allocate(mats, budget)
        assert budget - 0.02 <= a.bpw <= budget + 1e-9, (budget, a.bpw)


def test_zero_sensitivities_still_spend_the_budget():
    mats = [Matrix(f"blk.{i}.m.weight", 65536, 0.0, ["Q2_K", "Q4_K", "Q6_K"]) for i in range(20)]
    a = greedy_allocate(mats, 4.0)
    # no upgrade left fits: the slack is below one matrix's smallest step (2.0625 bits / 20 matrices)
    assert 4.0 - 2.0625 / 20 <= a.bpw <= 4.0


def test_uniform_ablation_uses_one_type():
    mats = [Matrix(f"blk.{i}.m.weight", 65536, 1.0 + i, ["Q2_K", "Q3_K", "Q4_K"]) for i in range(5)]
    a = uniform_allocate(mats, 3.6)
    assert set(a.types.values()) == {"Q3_K"}


def test_measured_error_model_drives_the_solver_and_matches_enumeration():
    # per-matrix measured errors (not the 2^-2b law) and Pareto ladders with uneven steps: greedy+polish
    # finds the enumerated optimum in most small cases and stays close in nearly all
    rng = np.random.default_rng(3)
    ladder = ["IQ2_XXS", "Q2_K", "IQ3_XXS", "Q3_K", "Q4_K"]
    ratios = []
    for t in range(120):
        mats = _case(rng, int(rng.integers(2, 6)), t % 2 == 1, ladder)
        for m in mats:  # the law times a per-matrix, per-type factor (lattice types lose more)
            m.rel = {q: 2.0 ** (-2 * TYPE_BITS[q]) * float(rng.uniform(0.6, 1.6)) for q in ladder}
            m.types = pareto_types(ladder, m.rel)
        budget = float(rng.uniform(2.2, 4.4))
        g, e = greedy_allocate(mats, budget), exhaustive_allocate(mats, budget)
        assert g.bpw <= budget + 1e-9
        assert g.objective >= e.objective * (1 - 1e-9)
        ratios.append(g.objective / e.objective)
    r = np.array(ratios)
    print(f"measured errors: greedy+polish optimal in {(r <= 1 + 1e-9).sum()}/{len(r)}; 90th pct ratio {np.percentile(r, 90):.3f}")
    assert (r <= 1 + 1e-9).mean() >= 0.85
    assert np.percentile(r, 90) <= 1.05
    m = mats[0]
    m.rel = {"Q3_K": 0.01}
    assert m.error("Q3_K") == pytest.approx(m.s * 0.01)
    assert predicted_error(2.0, "Q4_K") == pytest.approx(2.0 * 2.0**-9)  # the law without measurements


def test_measured_errors_rank_types_and_pareto_drops_dominated_ones():
    w = torch.randn(64, 512, generator=torch.Generator().manual_seed(0))
    rel = measure_errors(w, ["IQ2_XXS", "Q2_K", "Q3_K", "Q4_K", "Q6_K"], rows=32)
    assert rel["IQ2_XXS"] > rel["Q3_K"] > rel["Q4_K"] > rel["Q6_K"] > 0
    assert 1e-4 < rel["Q4_K"] < 2e-2  # a 4.5-bit type on Gaussian weights: about 0.5% relative error
    fake = {"A": 0.1, "B": 0.12, "C": 0.05}  # B costs more bits than A and is worse: dropped
    import actquant_plugin.allocate as al

    old = dict(al.TYPE_BITS)
    try:
        al.TYPE_BITS.update({"A": 2.0, "B": 2.5, "C": 3.0})
        assert pareto_types(["C", "B", "A"], fake) == ["A", "C"]
    finally:
        al.TYPE_BITS.clear()
        al.TYPE_BITS.update(old)


def test_hbar_bandwidth_saturates_on_wide_states_and_median_does_not():
    from actquant_plugin.hsic import rbf_kernel

    u = torch.randn(64, 512, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # d^2 ~ 1024
    off = ~torch.eye(64, dtype=torch.bool)
    k_hbar, k_med = rbf_kernel(u, "hbar")[off], rbf_kernel(u, "median")[off]
    assert k_hbar.min() > 0.999  # every pair looks alike: the kernel is ~1 - d^2 / (2 s^2)
    assert 0.5 < float(k_med.median()) < 0.7  # exp(-1/2) at the median pair
