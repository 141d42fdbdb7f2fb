"""generate(): greedy and seeded sampling, the probe monitor, steering, rollback and its cost accounting,
KV-cache truncation, edits during generation, hook hygiene and input validation.

Every number is checked against ``tests/gen_reference.py``: the untouched Hugging Face copy of the tiny
model, plain torch hooks, and one full forward of the whole sequence (no KV cache) per token fed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest
import torch
from gen_reference import (
    Config,
    RefGen,
    RProbe,
    RSteer,
    decoder_layers,
    full_forward,
    hidden_states,
    hooked,
    post_hook,
    pre_hook,
    replay_greedy,
    simulate,
)
from torch import Tensor

from interventions import ablate
from interventions.generate import generate
from interventions.policy import Generation, RollbackPolicy
from interventions.sampling import Sampling
from interventions.steering import Steer
from lens.errors import ToxlensError
from lens.hooks import count_hooks
from lens.model import LensModel
from lens.probe import Probe

KINDS = ["gpt2", "llama"]
# Different lengths (5, 1, 7, 2 tokens): left padding happens inside generate.
PROMPTS = ["the cat is very red", "you", "my friend is a dog and the", "one two"]
THRESHOLD, SAFE = 0.9, 0.5  # planted probe: idiot 0.993, jerk 0.731, every other token 0.0067

Pair = tuple[LensModel, Any, str]


@pytest.fixture(params=KINDS)
def pair(request: pytest.FixtureRequest, tiny_pair: Callable[..., tuple[LensModel, Any]]) -> Pair:
    model, ref = tiny_pair(request.param)
    return model, ref, request.param


# -- plumbing ------------------------------------------------------------------------------------
def ids_of(model: LensModel, text: str) -> list[int]:
    return list(model.tokenizer(text)["input_ids"])


def tok_id(model: LensModel, word: str) -> int:
    i: int = model.tokenizer.convert_tokens_to_ids(word)
    return i


def rprobe(p: Probe) -> RProbe:
    return RProbe(p.layer, p.hook, p.weight.clone(), float(p.bias), p.mean.clone(), p.std.clone())


def rsteer(s: Steer) -> RSteer:
    return RSteer(s.vector.clone(), s.layer, float(s.scale), s.positions, s.site)


def config(
    *,
    sampling: Sampling | None = None,
    steer: Steer | Sequence[Steer] = (),
    monitor: Probe | None = None,
    threshold: float | None = None,
    policy: RollbackPolicy | None = None,
    stop_at_eos: bool = False,
    eos: int | None = 2,
    zero_mlps: Sequence[int] = (),
) -> Config:
    sampling = sampling or Sampling()
    policy = policy or RollbackPolicy()
    steer = [steer] if isinstance(steer, Steer) else list(steer)
    return Config(
        greedy=sampling.greedy,
        temperature=sampling.temperature,
        steers=[rsteer(s) for s in steer],
        probe=None if monitor is None else rprobe(monitor),
        threshold=threshold,
        safe_threshold=policy.safe_threshold,
        budget=policy.budget,
        on_budget=policy.on_budget,
        steer_scale=policy.steer_scale,
        steer_tokens=policy.steer_tokens,
        steer_layer=policy.steer_layer,
        forbid_token=policy.forbid_token,
        eos=eos,
        stop_at_eos=stop_at_eos,
        zero_mlps=zero_mlps,
    )


def reference(
    ref: Any, model: LensModel, prompts: Sequence[str], max_new: int, cfg: Config, seed: int = 0
) -> list[RefGen]:
    return [simulate(ref, ids_of(model, p), max_new, cfg, seed + i) for i, p in enumerate(prompts)]


def events(g: Generation) -> list[tuple[int, int, int, int | None]]:
    return [(e.at, e.to, e.discarded, e.forbidden) for e in g.rollbacks]


def assert_matches(gens: Sequence[Generation], refs: Sequence[RefGen], atol: float = 1e-4) -> None:
    assert len(gens) == len(refs)
    for i, (g, r) in enumerate(zip(gens, refs)):
        assert g.tokens == r.tokens, f"row {i}"
        assert events(g) == r.rollbacks, f"row {i}"
        assert (g.finish_reason, g.forward_tokens, g.recomputed) == (r.finish, r.forward_tokens, r.recomputed)
        assert len(g.scores) == len(r.scores) and len(g.prompt_scores) == len(r.prompt_scores)
        if r.scores:
            torch.testing.assert_close(
                torch.tensor(g.scores), torch.tensor(r.scores).float(), atol=atol, rtol=0
            )
        if r.prompt_scores:
            torch.testing.assert_close(
                torch.tensor(g.prompt_scores), torch.tensor(r.prompt_scores).float(), atol=atol, rtol=0
            )


def assert_same(a: Sequence[Generation], b: Sequence[Generation], atol: float = 1e-5) -> None:
    """Two runs of generate agree on everything discrete, and on the scores to ``atol``."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.tokens, x.text, events(x), x.finish_reason, x.seed) == (
            y.tokens,
            y.text,
            events(y),
            y.finish_reason,
            y.seed,
        )
        assert (x.forward_tokens, x.recomputed, x.prompt_tokens) == (
            y.forward_tokens,
            y.recomputed,
            y.prompt_tokens,
        )
        assert len(x.scores) == len(y.scores) and len(x.prompt_scores) == len(y.prompt_scores)
        for s, t in ((x.scores, y.scores), (x.prompt_scores, y.prompt_scores)):
            if s:
                torch.testing.assert_close(torch.tensor(s), torch.tensor(t), atol=atol, rtol=0)


def edit_both(model: LensModel, ref: Any, name: str, fn: Callable[[Tensor], Any]) -> None:
    """Apply ``fn`` in place to the HF parameter ``name`` of the reference copy and of the model's own
    (bridged) HF model, so both stay identical."""
    mine = {
        n.replace("._original_component", ""): p
        for n, p in model.bridge.original_model.named_parameters(remove_duplicate=False)
    }
    theirs = dict(ref.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        fn(mine[name])
        fn(theirs[name])
    assert torch.equal(mine[name], theirs[name])


def final_hidden_direction(model: LensModel, ref: Any) -> Tensor:
    """Unit mean of the hidden state entering the unembedding (raw hook on the reference's lm_head)."""
    seen: list[Tensor] = []
    handle = ref.lm_head.register_forward_pre_hook(lambda _m, args: seen.append(args[0][0]))
    try:
        with torch.no_grad():
            for text in [
                "the cat is very red",
                "you are so very blue and green",
                "my friend is a dog",
                "one two",
            ]:
                ref(torch.tensor([ids_of(model, text)]))
    finally:
        handle.remove()
    m = torch.cat(seen).mean(0)
    m[0] = 0.0  # keep the planted coordinate clean
    return m / m.norm()


def plant(model: LensModel, ref: Any, kind: str, boost: tuple[float, float] = (1.2, 0.8)) -> Probe:
    """Coordinate 0 of the residual entering layer 0 marks the word: 1 for "idiot", 0.6 for "jerk", 0 for
    every other token (GPT-2's position embeddings are cleared there too). The returned probe reads
    that coordinate: score 0.993 on "idiot" (>= THRESHOLD), 0.731 on "jerk" (not safe, not flagged),
    0.0067 on everything else. The unembedding rows of both words are raised so the model likes them."""
    idiot, jerk = tok_id(model, "idiot"), tok_id(model, "jerk")
    emb = "transformer.wte.weight" if kind == "gpt2" else "model.embed_tokens.weight"

    def mark(w: Tensor) -> None:
        w[:, 0] = 0.0
        w[idiot, 0] = 1.0
        w[jerk, 0] = 0.6

    edit_both(model, ref, emb, mark)
    if kind == "gpt2":
        edit_both(model, ref, "transformer.wpe.weight", lambda w: w[:, 0].zero_())
    m = final_hidden_direction(model, ref)

    def raise_rows(w: Tensor) -> None:
        w[idiot] += boost[0] * m
        w[jerk] += boost[1] * m

    edit_both(model, ref, "transformer.wte.weight" if kind == "gpt2" else "lm_head.weight", raise_rows)
    d = model.info.d_model
    weight = torch.zeros(d)
    weight[0] = 10.0
    probe = Probe(0, "resid_pre", "mean", weight, -5.0, torch.zeros(d), torch.ones(d))
    # the plant does what it says, on the reference
    cfg = Config(probe=rprobe(probe))
    words = ["the", "idiot", "jerk", "cat", "you"]
    _, sc = full_forward(ref, ids_of(model, " ".join(words)), 5, cfg)
    assert sc is not None
    assert sc[1] >= THRESHOLD and SAFE <= sc[2] < THRESHOLD
    assert float(sc[[0, 3, 4]].max()) < 0.01
    return probe


def random_probe(model: LensModel, ref: Any, layer: int, hook: str, seed: int = 0) -> Probe:
    """A probe standardised with the reference's own residual statistics (logits of order 1, so the
    sigmoid is not saturated and a 1e-4 comparison of scores means something)."""
    g = torch.Generator().manual_seed(seed)
    h = hidden_states(ref, ids_of(model, "the cat is very red and you are a jerk my friend"), layer, hook)
    d = model.info.d_model
    weight = 2.0 * torch.randn(d, generator=g) / d**0.5
    return Probe(layer, hook, "mean", weight, 0.1, h.mean(0), h.std(0) + 1e-3)


def random_vector(d: int, norm: float, seed: int) -> Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return norm * v / v.norm()


def final_forbidden(gen: Generation) -> dict[int, set[int]]:
    """The forbidden tokens per absolute position at the end of a run, from its rollback trace: a rollback
    to a safe position clears those after it and adds its own."""
    n_prompt = len(gen.prompt_tokens)
    forbid: dict[int, set[int]] = {}
    for ev in gen.rollbacks:
        safe_pos = n_prompt + ev.to - 1
        forbid = {q: s for q, s in forbid.items() if q <= safe_pos}
        if ev.forbidden is not None:
            forbid.setdefault(safe_pos, set()).add(ev.forbidden)
    return forbid


def check_trace(gen: Generation, threshold: float, safe: float) -> None:
    """Rebuild the sequence from ``gen.timeline`` alone and check every rollback against the rules: it
    fires on the newest token with a score >= threshold, keeps ``tokens[:to]`` where ``to`` is the latest
    earlier kept position whose score is < safe (0 when none), discards ``at + 1 - to`` tokens and forbids
    the token that started the discarded span, at the safe position."""
    n_prompt = len(gen.prompt_tokens)
    toks: list[int] = []
    scores: list[float] = []
    for ev in gen.timeline:
        if ev["event"] == "token":
            gi = ev["position"] - n_prompt
            if gi < 0:
                assert (
                    gi == -1 and ev["token"] == gen.prompt_tokens[-1]
                )  # corrective re-feed of the prompt end
                continue
            if gi == len(toks):
                toks.append(ev["token"])
                scores.append(ev["score"])
            else:  # corrective re-feed of the last kept token: it keeps its first score
                assert gi == len(toks) - 1 and ev["token"] == toks[gi]
            continue
        assert ev["event"] == "rollback"
        at, to = ev["at"], ev["to"]
        assert at == len(toks) - 1 and scores[at] >= threshold
        assert to == max((k for k in range(1, at + 1) if scores[k - 1] < safe), default=0)
        assert ev["discarded"] == at + 1 - to
        assert ev["position"] == n_prompt + to - 1
        if ev["forbidden"] is not None:
            assert ev["forbidden"] == toks[to]
        del toks[to:], scores[to:]
    assert toks == gen.tokens
    assert scores == pytest.approx(gen.scores, abs=1e-6)


# -- 1. greedy ------------------------------------------------------------------------------------
def test_greedy_matches_full_recompute_reference(pair: Pair) -> None:
    model, ref, _ = pair
    gens = generate(model, PROMPTS, 12, sampling=Sampling(greedy=True), stop_at_eos=False)
    refs = reference(ref, model, PROMPTS, 12, config(sampling=Sampling(greedy=True)))
    assert_matches(gens, refs)
    assert len({tuple(g.tokens) for g in gens}) == len(PROMPTS)  # the prompts matter
    for g, p in zip(gens, PROMPTS):
        assert g.prompt == p and g.prompt_tokens == ids_of(model, p)
        assert g.text == model.tokenizer.decode(g.tokens, skip_special_tokens=True)
        assert g.finish_reason == "length" and len(g.tokens) == 12
        # no monitor: the last token is never fed
        assert (g.forward_tokens, g.recomputed) == (len(g.prompt_tokens) + 11, 0)
        assert g.scores == [] and g.prompt_scores == [] and g.rollbacks == []


def test_eos_ends_a_row_and_is_not_part_of_the_text(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, ref = tiny_pair("llama")
    eos = model.tokenizer.eos_token_id
    m = final_hidden_direction(model, ref)
    edit_both(model, ref, "lm_head.weight", lambda w: w[eos].add_(0.45 * m))
    gens = generate(model, PROMPTS * 2, 14, seed=3)
    refs = reference(ref, model, PROMPTS * 2, 14, config(stop_at_eos=True, eos=eos), seed=3)
    assert_matches(gens, refs)
    finishes = {g.finish_reason for g in gens}
    assert finishes == {"eos", "length"}, finishes  # both happen in this batch
    for g in gens:
        assert eos not in g.tokens
        if g.finish_reason == "eos":
            assert len(g.tokens) < 14 and g.forward_tokens == len(g.prompt_tokens) + len(g.tokens)


# -- 2. seeded sampling ---------------------------------------------------------------------------
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_seeded_sampling_matches_reference(pair: Pair, temperature: float) -> None:
    model, ref, _ = pair
    sampling = Sampling(temperature=temperature)
    gens = generate(model, PROMPTS, 15, seed=11, sampling=sampling, stop_at_eos=False)
    assert [g.seed for g in gens] == [11, 12, 13, 14]
    assert_matches(gens, reference(ref, model, PROMPTS, 15, config(sampling=sampling), seed=11))
    assert_same(gens, generate(model, PROMPTS, 15, seed=11, sampling=sampling, stop_at_eos=False))
    other = generate(model, PROMPTS, 15, seed=12, sampling=sampling, stop_at_eos=False)
    assert [g.tokens for g in other] != [g.tokens for g in gens]
    # row i is seeded with seed + i whatever its batch: prompt 1 alone with seed 12 == row 1 above
    alone = generate(model, PROMPTS[1:2], 15, seed=12, sampling=sampling, stop_at_eos=False)
    assert alone[0].tokens == gens[1].tokens


def draws(sampling: Sampling, logits: Tensor, seed: int, n: int, row: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [sampling.sample_rows(logits, [g], [row], [()])[0] for _ in range(n)]


def hand_draws(probs: Tensor, seed: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [int(torch.multinomial(probs, 1, generator=g)) for _ in range(n)]


def test_sample_rows_top_k_top_p_by_hand() -> None:
    n = 400
    x = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, 3.0])
    # plain: softmax(x / T)
    assert draws(Sampling(temperature=0.7), x[None], 1, n) == hand_draws(torch.softmax(x / 0.7, -1), 1, n)
    # top_k = 2 keeps ids 5 and 0
    kept = torch.zeros(6)
    kept[[5, 0]] = torch.softmax(x[[5, 0]], -1)
    got = draws(Sampling(top_k=2), x[None], 2, n)
    assert set(got) == {0, 5} and got == hand_draws(kept, 2, n)
    # top_p: probabilities 0.05, 0.5, 0.3, 0.15 -> the smallest set reaching top_p, renormalised
    p = torch.tensor([0.05, 0.5, 0.3, 0.15])
    lp = p.log()[None]
    for top_p, ids in [(0.75, [1, 2]), (0.85, [1, 2, 3]), (0.4, [1]), (0.97, [0, 1, 2, 3])]:
        want = torch.zeros(4)
        want[ids] = p[ids] / p[ids].sum()
        got = draws(Sampling(top_p=top_p), lp, 3, n)
        assert set(got) == set(ids), top_p
        assert got == hand_draws(want, 3, n), top_p
    # temperature, then top_k, then top_p: x/2 = [1, .5, .25, 0, -.5, 1.5]; top-3 -> ids 5, 0, 1 with
    # softmax .506, .307, .186; top_p=0.7 keeps 5 and 0
    want = torch.zeros(6)
    want[[5, 0]] = torch.softmax(x[[5, 0]] / 2, -1)
    got = draws(Sampling(temperature=2.0, top_k=3, top_p=0.7), x[None], 4, n)
    assert set(got) == {0, 5} and got == hand_draws(want, 4, n)


def test_sample_rows_greedy_forbid_and_row_independence() -> None:
    logits = torch.tensor([[1.0, 3.0, 3.0, 0.0], [0.0, 0.5, 2.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    greedy = Sampling(greedy=True)
    g = torch.Generator()
    assert greedy.sample_rows(logits, [g, g], [0, 1], [(), ()]) == [1, 2]  # tie -> lowest id
    assert greedy.sample_rows(logits, [g, g], [0, 1], [{1}, {2, 3}]) == [2, 1]
    assert greedy.sample_rows(logits, [g], [2], [[0]]) == [1]
    assert greedy.sample_rows(logits, [], [], []) == []
    with pytest.raises(ToxlensError, match="every token is forbidden"):
        greedy.sample_rows(logits, [g], [1], [range(4)])
    # a forbidden id is never drawn; each row draws only with its own generator
    s = Sampling()
    ga, gb = torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)
    both = [s.sample_rows(logits, [ga, gb], [1, 0], [{2}, ()]) for _ in range(200)]
    assert 2 not in {a for a, _ in both}
    assert [a for a, _ in both] == draws_forbid(s, logits, 5, 200, 1, {2})
    assert [b for _, b in both] == draws(s, logits, 6, 200, row=0)


def draws_forbid(s: Sampling, logits: Tensor, seed: int, n: int, row: int, banned: set[int]) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return [s.sample_rows(logits, [g], [row], [banned])[0] for _ in range(n)]


def test_sampling_rejects_bad_settings() -> None:
    for kwargs, match in [
        ({"temperature": 0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ]:
        with pytest.raises(ToxlensError, match=match):
            Sampling(**kwargs)


# -- 3. the probe monitor -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "hook", "layer"),
    [
        ("gpt2", "resid_post", 1),
        ("gpt2", "resid_pre", 0),
        ("llama", "resid_pre", 2),
        ("llama", "resid_post", 0),
    ],
)
def test_monitor_scores_match_reference(
    tiny_pair: Callable[..., tuple[LensModel, Any]], kind: str, hook: str, layer: int
) -> None:
    model, ref = tiny_pair(kind)
    probe = random_probe(model, ref, layer, hook)
    sampling = Sampling(temperature=0.8)
    gens = generate(model, PROMPTS, 10, seed=4, sampling=sampling, monitor=probe, stop_at_eos=False)
    refs = reference(ref, model, PROMPTS, 10, config(sampling=sampling, monitor=probe), seed=4)
    assert_matches(gens, refs)
    unmonitored = generate(model, PROMPTS, 10, seed=4, sampling=sampling, stop_at_eos=False)
    all_scores = []
    for g, u in zip(gens, unmonitored):
        assert g.tokens == u.tokens  # watching changes nothing
        assert len(g.scores) == 10 and len(g.prompt_scores) == len(g.prompt_tokens)
        assert g.forward_tokens == len(g.prompt_tokens) + 10  # the last token is fed for its score
        assert [e["score"] for e in g.timeline] == g.scores
        all_scores += g.scores + g.prompt_scores
    assert max(all_scores) - min(all_scores) > 0.2  # not saturated: the comparison can fail


# -- 4. steering ----------------------------------------------------------------------------------
STEER_CASES = {
    "llama-prompt-pre": ("llama", [(1, 4.0, "prompt", "resid_pre")]),
    "llama-generated-post": ("llama", [(0, 3.0, "generated", "resid_post")]),
    "gpt2-all-pre": ("gpt2", [(2, 3.0, "all", "resid_pre")]),
    "gpt2-generated-pre": ("gpt2", [(1, 3.0, "generated", "resid_pre")]),
    "gpt2-prompt-post": ("gpt2", [(0, 3.0, "prompt", "resid_post")]),
    "llama-three": (
        "llama",
        [(2, 3.0, "all", "resid_post"), (0, -2.0, "generated", "resid_pre"), (1, 2.0, "prompt", "resid_pre")],
    ),
}


@pytest.mark.parametrize("case", list(STEER_CASES))
def test_steering_matches_reference(tiny_pair: Callable[..., tuple[LensModel, Any]], case: str) -> None:
    kind, specs = STEER_CASES[case]
    model, ref = tiny_pair(kind)
    d = model.info.d_model
    steers = [
        Steer(random_vector(d, 1.0, 100 + k), layer, scale, positions, site)
        for k, (layer, scale, positions, site) in enumerate(specs)
    ]
    probe = random_probe(model, ref, 2, "resid_post")
    greedy = Sampling(greedy=True)
    gens = generate(model, PROMPTS, 10, sampling=greedy, steer=steers, monitor=probe, stop_at_eos=False)
    refs = reference(ref, model, PROMPTS, 10, config(sampling=greedy, steer=steers, monitor=probe))
    assert_matches(gens, refs)
    # the steers matter, and so does where they are added
    plain = reference(ref, model, PROMPTS, 10, config(sampling=greedy, monitor=probe))
    assert [r.tokens for r in plain] != [r.tokens for r in refs]
    everywhere = [replace(s, positions="all") for s in steers]
    if everywhere != steers:
        alt = reference(ref, model, PROMPTS, 10, config(sampling=greedy, steer=everywhere, monitor=probe))
        diff = max(abs(a - b) for r, q in zip(refs, alt) for a, b in zip(r.scores, q.scores))
        assert diff > 1e-2 or [r.tokens for r in refs] != [q.tokens for q in alt]


def test_steering_single_steer_object_and_sampling(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, ref = tiny_pair("gpt2")
    steer = Steer(random_vector(model.info.d_model, 1.0, 7), 1, -3.0, "generated", "resid_post")
    gens = generate(model, PROMPTS, 12, seed=9, steer=steer, stop_at_eos=False)
    assert_matches(gens, reference(ref, model, PROMPTS, 12, config(steer=[steer]), seed=9))


# -- 5. batch invariance --------------------------------------------------------------------------
@pytest.mark.parametrize("corrective", [0.0, 2.0])
def test_batch_size_does_not_change_anything(pair: Pair, corrective: float) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind, boost=(0.6, 0.4))  # rows differ in how often they roll back
    prompts = [*PROMPTS, "she is a jerk", "so"]
    policy = RollbackPolicy(
        safe_threshold=SAFE, budget=3, steer_scale=corrective, steer_tokens=2, steer_layer=1
    )
    kw: dict[str, Any] = dict(seed=21, monitor=probe, threshold=THRESHOLD, policy=policy, stop_at_eos=False)
    runs = [generate(model, prompts, 16, batch_size=b, **kw) for b in (1, 4, len(prompts))]
    assert_same(runs[0], runs[1])
    assert_same(runs[0], runs[2])
    n_events = [len(g.rollbacks) for g in runs[0]]
    assert sum(n_events) >= 3 and len(set(n_events)) > 1  # each row rolls back on its own
    # and with steering plus greedy decoding
    steer = Steer(random_vector(model.info.d_model, 1.0, 3), 1, 2.0, "generated")
    kw.update(sampling=Sampling(greedy=True), steer=steer)
    assert_same(*(generate(model, prompts, 16, batch_size=b, **kw) for b in (1, len(prompts))))


# -- 6. rollback semantics on a planted probe -----------------------------------------------------
POLICIES = {
    "stop": RollbackPolicy(safe_threshold=SAFE, budget=6),
    "continue": RollbackPolicy(safe_threshold=SAFE, budget=2, on_budget="continue"),
    "no-forbid": RollbackPolicy(safe_threshold=SAFE, budget=3, forbid_token=False, on_budget="continue"),
    "corrective": RollbackPolicy(
        safe_threshold=SAFE, budget=5, steer_scale=3.0, steer_tokens=2, steer_layer=1
    ),
    "corrective-probe-layer": RollbackPolicy(safe_threshold=SAFE, budget=5, steer_scale=0.05, steer_tokens=3),
}


@pytest.mark.parametrize("name", list(POLICIES))
def test_rollback_run_matches_reference(pair: Pair, name: str) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    policy = POLICIES[name]
    steer = Steer(random_vector(model.info.d_model, 1.0, 5), 1, 1.5, "prompt")  # the re-fed prompt end too
    kw: dict[str, Any] = dict(monitor=probe, threshold=THRESHOLD, policy=policy, steer=steer)
    gens = generate(model, PROMPTS, 16, seed=2, stop_at_eos=False, **kw)
    refs = reference(ref, model, PROMPTS, 16, config(**kw), seed=2)
    assert_matches(gens, refs)
    assert sum(len(g.rollbacks) for g in gens) >= 3
    for g in gens:
        check_trace(g, THRESHOLD, SAFE)


@pytest.mark.parametrize("positions", ["prompt", "generated"])
def test_corrective_refeed_of_the_prompt_end_is_a_prompt_position(pair: Pair, positions: str) -> None:
    """Greedy decoding of the planted model draws "idiot" first, so rollbacks go back to the prompt's end:
    its last token is fed again (corrective steer) and is still a prompt position for a user steer."""
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    policy = RollbackPolicy(safe_threshold=SAFE, budget=6, steer_scale=1.0, steer_tokens=2, steer_layer=1)
    steer = Steer(random_vector(model.info.d_model, 1.0, 8), 1, 2.0, positions)
    kw: dict[str, Any] = dict(
        sampling=Sampling(greedy=True), monitor=probe, threshold=THRESHOLD, policy=policy, steer=steer
    )
    prompts = ["you", "so", "the cat", "one", "my", "she is"]
    gens = generate(model, prompts, 10, stop_at_eos=False, **kw)
    assert_matches(gens, reference(ref, model, prompts, 10, config(**kw)))
    assert any(e.to == 0 for g in gens for e in g.rollbacks)
    for g in gens:
        check_trace(g, THRESHOLD, SAFE)
        assert_cost(g, corrective=True)


def assert_cost(g: Generation, corrective: bool) -> None:
    n_prompt, disc = len(g.prompt_tokens), sum(e.discarded for e in g.rollbacks)
    refeeds = len(g.rollbacks) - (g.finish_reason == "budget") if corrective else 0
    # every generated position fed is either kept or discarded by exactly one rollback
    assert g.forward_tokens == n_prompt + len(g.tokens) + disc + refeeds
    if g.finish_reason == "length":
        assert g.forward_tokens == n_prompt + len(g.tokens) + g.recomputed
        assert g.recomputed == disc + refeeds


@pytest.mark.parametrize("corrective", [0.0, 2.0])
def test_forbidden_token_never_survives_and_costs_add_up(pair: Pair, corrective: float) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    idiot = tok_id(model, "idiot")
    policy = RollbackPolicy(
        safe_threshold=SAFE, budget=200, steer_scale=corrective, steer_tokens=2, steer_layer=1
    )
    for sampling in (Sampling(greedy=True), Sampling()):
        unguarded = generate(model, PROMPTS, 20, seed=5, sampling=sampling, monitor=probe, stop_at_eos=False)
        assert sum(g.tokens.count(idiot) for g in unguarded) >= 4  # the model likes the word
        gens = generate(
            model,
            PROMPTS,
            20,
            seed=5,
            sampling=sampling,
            monitor=probe,
            threshold=THRESHOLD,
            policy=policy,
            stop_at_eos=False,
        )
        assert sum(len(g.rollbacks) for g in gens) >= 4
        assert any(e.discarded > 1 for g in gens for e in g.rollbacks)  # "jerk idiot" -> back before jerk
        for g in gens:
            assert g.finish_reason == "length" and len(g.tokens) == 20
            assert idiot not in g.tokens
            assert max(g.scores) < THRESHOLD
            for e in g.rollbacks:
                assert e.discarded == e.at + 1 - e.to and e.forbidden is not None
            check_trace(g, THRESHOLD, SAFE)
            assert_cost(g, corrective > 0)


def test_budget_stop_truncates_at_the_safe_point(pair: Pair) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    idiot = tok_id(model, "idiot")
    greedy = Sampling(greedy=True)
    for budget in (0, 2):
        policy = RollbackPolicy(safe_threshold=SAFE, budget=budget, on_budget="stop")
        gens = generate(
            model,
            PROMPTS,
            20,
            sampling=greedy,
            monitor=probe,
            threshold=THRESHOLD,
            policy=policy,
            stop_at_eos=False,
        )
        stopped = [g for g in gens if g.finish_reason == "budget"]
        assert stopped
        for g in stopped:
            # `budget` rollbacks, then the truncation that ends the sequence (also in the trace)
            assert len(g.rollbacks) == budget + 1
            last = g.rollbacks[-1]
            assert len(g.tokens) == last.to and len(g.scores) == last.to
            assert g.text == model.tokenizer.decode(g.tokens, skip_special_tokens=True)
            assert idiot not in g.tokens and all(s < THRESHOLD for s in g.scores)
            check_trace(g, THRESHOLD, SAFE)
            assert_cost(g, corrective=False)


def test_budget_continue_keeps_going(pair: Pair) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    idiot = tok_id(model, "idiot")
    policy = RollbackPolicy(safe_threshold=SAFE, budget=2, on_budget="continue")
    gens = generate(
        model,
        PROMPTS,
        20,
        sampling=Sampling(greedy=True),
        monitor=probe,
        threshold=THRESHOLD,
        policy=policy,
        stop_at_eos=False,
    )
    for g in gens:
        assert len(g.rollbacks) == 2 and g.finish_reason == "length" and len(g.tokens) == 20
        assert idiot in g.tokens and max(g.scores) >= THRESHOLD  # flagged tokens are kept once spent
        check_trace(g, THRESHOLD, SAFE)
        assert_cost(g, corrective=False)


def test_without_forbidding_greedy_redraws_the_same_token(pair: Pair) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    policy = RollbackPolicy(safe_threshold=SAFE, budget=3, forbid_token=False, on_budget="continue")
    (g,) = generate(
        model,
        ["you"],
        10,
        sampling=Sampling(greedy=True),
        monitor=probe,
        threshold=THRESHOLD,
        policy=policy,
        stop_at_eos=False,
    )
    assert len(g.rollbacks) == 3 and all(e.forbidden is None for e in g.rollbacks)
    assert (
        len({(e.at, e.to, e.discarded) for e in g.rollbacks}) == 1
    )  # the stored logits give the same argmax
    assert_cost(g, corrective=False)


# -- 7. the KV cache is really truncated ----------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 16])
def test_greedy_with_rollbacks_equals_full_recompute_replay(pair: Pair, batch_size: int) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    policy = RollbackPolicy(safe_threshold=SAFE, budget=200)
    greedy = Sampling(greedy=True)
    gens = generate(
        model,
        PROMPTS,
        18,
        sampling=greedy,
        monitor=probe,
        threshold=THRESHOLD,
        policy=policy,
        batch_size=batch_size,
        stop_at_eos=False,
    )
    cfg = config(sampling=greedy)
    for g in gens:
        forbid = final_forbidden(g)
        assert forbid and g.rollbacks
        assert replay_greedy(ref, g.prompt_tokens, g.tokens, forbid, cfg) == g.tokens
        assert replay_greedy(ref, g.prompt_tokens, g.tokens, {}, cfg) != g.tokens  # the forbids matter


def test_long_batch_with_many_rollbacks_matches_reference(
    tiny_pair: Callable[..., tuple[LensModel, Any]],
) -> None:
    """Two rows, one long: with masking instead of cropping, the cache holds more slots than the model
    has positions (64); logical positions stay below 64 (9 + 55 tokens)."""
    model, ref = tiny_pair("gpt2")
    probe = plant(model, ref, "gpt2")
    prompts = ["you", "my friend is a dog and the cat is"]
    policy = RollbackPolicy(safe_threshold=SAFE, budget=500)
    greedy = Sampling(greedy=True)
    kw: dict[str, Any] = dict(sampling=greedy, monitor=probe, threshold=THRESHOLD, policy=policy)
    gens = generate(model, prompts, 55, stop_at_eos=False, **kw)
    assert max(g.forward_tokens for g in gens) > 64
    assert_matches(gens, reference(ref, model, prompts, 55, config(**kw)))


# -- 8. edits apply during generation -------------------------------------------------------------
def test_ablation_is_active_while_generating(pair: Pair) -> None:
    model, ref, _ = pair
    probe = random_probe(model, ref, 2, "resid_post")
    greedy = Sampling(greedy=True)
    kw: dict[str, Any] = dict(sampling=greedy, monitor=probe)
    with ablate(model, ["L1.mlp"]):
        gens = generate(model, PROMPTS, 10, stop_at_eos=False, **kw)
    refs = reference(ref, model, PROMPTS, 10, config(**kw, zero_mlps=[1]))
    assert_matches(gens, refs)
    plain = reference(ref, model, PROMPTS, 10, config(**kw))
    assert [r.tokens for r in plain] != [r.tokens for r in refs]
    assert_matches(generate(model, PROMPTS, 10, stop_at_eos=False, **kw), plain)  # undone on exit


# -- 9. hook hygiene ------------------------------------------------------------------------------
class FailingProbe(Probe):
    """Raises ``exc`` on the ``fail_at``-th call of ``score`` — mid-generation, with every hook attached."""

    def __init__(self, base: Probe, exc: BaseException, fail_at: int = 3) -> None:
        super().__init__(base.layer, base.hook, base.pooling, base.weight, base.bias, base.mean, base.std)
        self.exc, self.fail_at, self.calls = exc, fail_at, 0

    def score(self, resid: Tensor) -> Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise self.exc
        return super().score(resid)


def test_no_hook_is_left_behind(pair: Pair) -> None:
    model, ref, kind = pair
    probe = plant(model, ref, kind)
    steer = Steer(random_vector(model.info.d_model, 1.0, 1), 1, 2.0, "generated", "resid_post")
    policy = RollbackPolicy(safe_threshold=SAFE, steer_scale=1.0, steer_tokens=2)
    kw: dict[str, Any] = dict(
        seed=1, steer=steer, monitor=probe, threshold=THRESHOLD, policy=policy, stop_at_eos=False
    )
    first = generate(model, PROMPTS, 8, **kw)  # warm-up: TransformerLens wires its capture hooks once
    baseline = count_hooks(model.bridge)
    # a user's own hooks, added before, must survive and keep firing
    calls = {"tl": 0, "torch": 0}

    def tl_hook(x: Tensor, hook: Any = None) -> None:
        calls["tl"] += 1

    point = model.bridge.hook_dict["blocks.1.hook_resid_post"]
    handle = point.add_hook(tl_hook, dir="fwd")
    raw = model.blocks[2].register_forward_hook(lambda *_: calls.__setitem__("torch", calls["torch"] + 1))
    with_user = count_hooks(model.bridge)
    assert with_user > baseline
    try:
        assert_same(generate(model, PROMPTS, 8, **kw), first)
        assert count_hooks(model.bridge) == with_user
        for exc in (RuntimeError("boom"), KeyboardInterrupt()):
            before = dict(calls)
            with pytest.raises(type(exc)):
                generate(model, PROMPTS, 8, **{**kw, "monitor": FailingProbe(probe, exc)})
            assert count_hooks(model.bridge) == with_user
            assert calls["tl"] > before["tl"] and calls["torch"] > before["torch"]
        n = dict(calls)
        assert_same(generate(model, PROMPTS, 8, **kw), first)  # computes exactly what it did
        assert calls["tl"] > n["tl"] and calls["torch"] > n["torch"]
    finally:
        handle.hook.remove()
        point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
        raw.remove()
    assert count_hooks(model.bridge) == baseline


# -- 10. bad input --------------------------------------------------------------------------------
def _bad_cases() -> dict[str, tuple[Callable[[LensModel, Probe], dict[str, Any]], str]]:
    def steer(**kw: Any) -> Callable[[LensModel, Probe], dict[str, Any]]:
        def make(model: LensModel, _probe: Probe) -> dict[str, Any]:
            args: dict[str, Any] = dict(vector=torch.ones(model.info.d_model), layer=1, scale=1.0)
            args.update(kw)
            if callable(args["vector"]):
                args["vector"] = args["vector"](model.info.d_model)
            return {"steer": Steer(**args)}

        return make

    def policy(**kw: Any) -> Callable[[LensModel, Probe], dict[str, Any]]:
        return lambda _m, p: {"monitor": p, "threshold": 0.9, "policy": RollbackPolicy(**kw)}

    def nan_vector(d: int) -> Tensor:
        v = torch.ones(d)
        v[3] = float("nan")
        return v

    return {
        "steer-size": (steer(vector=lambda d: torch.ones(d + 1)), r"shape \(48,\)"),
        "steer-2d": (steer(vector=lambda d: torch.ones(1, d)), "steering vector must have shape"),
        "steer-nan": (steer(vector=nan_vector), "NaN or inf"),
        "steer-inf-scale": (steer(scale=float("inf")), "scale must be finite"),
        "steer-positions": (steer(positions="everywhere"), "unknown steering positions 'everywhere'"),
        "steer-site": (steer(site="resid_mid"), "unknown steering site 'resid_mid'"),
        "steer-layer": (steer(layer=3), r"layer must be an int in \[0, 3\), got 3"),
        "steer-layer-neg": (steer(layer=-1), "layer must be an int"),
        "steer-layer-float": (steer(layer=1.0), "layer must be an int"),
        "threshold-no-monitor": (lambda _m, _p: {"threshold": 0.5}, "without a monitor"),
        "threshold-zero": (lambda _m, p: {"monitor": p, "threshold": 0.0}, r"threshold must be in \(0, 1\]"),
        "threshold-big": (lambda _m, p: {"monitor": p, "threshold": 1.5}, r"threshold must be in \(0, 1\]"),
        "safe-above": (policy(safe_threshold=0.95), "safe_threshold"),
        "budget-neg": (policy(budget=-1), "budget must be >= 0"),
        "on-budget": (policy(on_budget="retry"), "unknown on_budget 'retry'"),
        "steer-scale-neg": (policy(steer_scale=-1.0), "steer_scale"),
        "steer-tokens": (policy(steer_tokens=0), "steer_tokens"),
        "steer-layer-policy": (policy(steer_layer=7), "corrective steer layer"),
        "monitor-layer": (lambda m, p: {"monitor": replace(p, layer=5)}, "layer 5"),
        "monitor-hook": (lambda m, p: {"monitor": replace(p, hook="resid_mid")}, "resid_mid"),
        "monitor-d-model": (
            lambda m, p: {
                "monitor": replace(p, weight=torch.ones(7), mean=torch.zeros(7), std=torch.ones(7))
            },
            r"shape \(7,\), expected \(48,\) \(d_model\)",
        ),
        "no-prompts": (lambda _m, _p: {"prompts": []}, "non-empty list"),
        "prompt-str": (lambda _m, _p: {"prompts": "the cat"}, "non-empty list"),
        "empty-prompt": (lambda _m, _p: {"prompts": ["the cat", ""]}, r"prompt 1 \(''\) has no tokens"),
        "too-long": (
            lambda _m, _p: {"prompts": ["one two three four five"], "max_new_tokens": 60},
            "context of 64",
        ),
        "max-new-zero": (lambda _m, _p: {"max_new_tokens": 0}, "max_new_tokens"),
        "batch-zero": (lambda _m, _p: {"batch_size": 0}, "batch_size"),
    }


BAD = _bad_cases()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_before_touching_the_model(
    tiny_pair: Callable[..., tuple[LensModel, Any]], case: str
) -> None:
    model, ref = tiny_pair("llama")
    probe = random_probe(model, ref, 1, "resid_post")
    generate(model, ["you"], 2)  # warm-up
    before = count_hooks(model.bridge)
    make, match = BAD[case]
    kwargs = {"prompts": ["the cat", "you"], "max_new_tokens": 4, **make(model, probe)}
    with pytest.raises(ToxlensError, match=match):
        generate(model, **kwargs)
    assert count_hooks(model.bridge) == before


def test_context_limit_is_inclusive(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    """prompt + max_new_tokens == n_ctx (64) is allowed; every fed position stays < 64 (GPT-2 would index
    past its position table otherwise), even with the monitor feeding the last token and rollbacks."""
    model, ref = tiny_pair("gpt2")
    probe = plant(model, ref, "gpt2")
    prompt = "one two three four five"
    policy = RollbackPolicy(safe_threshold=SAFE, budget=3, on_budget="continue")
    kw: dict[str, Any] = dict(
        sampling=Sampling(greedy=True), monitor=probe, threshold=THRESHOLD, policy=policy
    )
    gens = generate(model, [prompt], 59, stop_at_eos=False, **kw)
    assert len(gens[0].tokens) == 59
    assert_matches(gens, reference(ref, model, [prompt], 59, config(**kw)))
    with pytest.raises(ToxlensError, match="context"):
        generate(model, [prompt], 60)


def test_prepend_bos(tiny_pair: Callable[..., tuple[LensModel, Any]]) -> None:
    model, ref = tiny_pair("gpt2")
    greedy = Sampling(greedy=True)
    (g,) = generate(model, ["the cat"], 6, sampling=greedy, prepend_bos=True, stop_at_eos=False)
    bos = model.tokenizer.bos_token_id
    assert g.prompt_tokens == [bos, *ids_of(model, "the cat")]
    assert g.tokens == simulate(ref, g.prompt_tokens, 6, config(sampling=greedy)).tokens


# -- corner cases ----------------------------------------------------------------------------------
def anti_direction(model: LensModel, ref: Any, text: str) -> Tensor:
    """A unit direction ``d`` such that *subtracting* a little of it from the residual entering layer 0
    *raises* ``d . resid_post(2)`` at the same position: the eigenvector of the most negative eigenvalue
    of the symmetrised position-diagonal Jacobian d resid_post(2) / d resid_pre(0) (reference model)."""
    ids = ids_of(model, text)

    def f(delta: Tensor) -> Tensor:
        seen: dict[str, Tensor] = {}
        regs = [
            pre_hook(ref, 0, lambda h: h + delta[None]),
            post_hook(decoder_layers(ref)[2], lambda h: seen.__setitem__("h", h[0])),
        ]
        with hooked(regs):
            ref(torch.tensor([ids]), use_cache=False)
        return seen["h"]

    jac = torch.autograd.functional.jacobian(f, torch.zeros(len(ids), model.info.d_model), vectorize=True)
    diag = torch.stack([jac[p, :, p, :] for p in range(len(ids))]).mean(0)
    values, vectors = torch.linalg.eigh((diag + diag.T) / 2)
    assert values[0] < -1  # the blocks more than undo the subtraction along d
    d = vectors[:, 0]
    return d * torch.sign(d[d.abs().argmax()])


def test_corrective_refeed_flagged_again_does_not_crash(
    tiny_pair: Callable[..., tuple[LensModel, Any]],
) -> None:
    """With ``steer_layer`` below the probe's layer the corrective steer need not lower the probe score
    (the blocks in between may reverse it): the re-fed safe-point token can itself be flagged."""
    model, ref = tiny_pair("llama")
    text = "the cat is very red and you are a jerk my friend"
    d = anti_direction(model, ref, text)
    proj = hidden_states(ref, ids_of(model, text), 2, "resid_post") @ d
    zeros, ones = torch.zeros(model.info.d_model), torch.ones(model.info.d_model)
    probe = Probe(2, "resid_post", "mean", 60.0 * d, -60.0 * float(proj.quantile(0.2)), zeros, ones)
    policy = RollbackPolicy(safe_threshold=0.3, budget=20, steer_scale=0.2, steer_layer=0, steer_tokens=1)
    gens = generate(
        model, ["the cat is"] * 10, 20, seed=0, monitor=probe, threshold=0.9, policy=policy, stop_at_eos=False
    )
    refed_high = 0
    for g in gens:
        assert g.finish_reason in ("length", "budget")
        for e in g.rollbacks:
            assert 0 <= e.to <= e.at and e.discarded == e.at + 1 - e.to
        check_trace(g, 0.9, 0.3)  # a re-fed token keeps its first score and is not judged again
        n_prompt, seen = len(g.prompt_tokens), set()
        for ev in g.timeline:
            if ev["event"] == "token":
                refed_high += ev["position"] in seen and ev["score"] >= 0.9
                seen.add(ev["position"])
            else:
                seen = {q for q in seen if q < n_prompt + ev["to"]}
    assert refed_high > 0  # the situation this test is about did occur


@pytest.mark.parametrize("case", ["nan-weight", "zero-weight-corrective"])
def test_monitor_probe_with_undefined_numbers_is_refused(
    tiny_pair: Callable[..., tuple[LensModel, Any]], case: str
) -> None:
    model, _ = tiny_pair("llama")
    d = model.info.d_model
    weight = torch.full((d,), float("nan")) if case == "nan-weight" else torch.zeros(d)
    probe = Probe(1, "resid_post", "mean", weight, 5.0, torch.zeros(d), torch.ones(d))
    policy = RollbackPolicy(steer_scale=1.0 if case == "zero-weight-corrective" else 0.0)
    with pytest.raises(ToxlensError, match="probe"):
        generate(model, ["the cat"], 5, monitor=probe, threshold=0.9, policy=policy, stop_at_eos=False)


def test_probe_layer_out_of_range_with_threshold_names_the_probe(
    tiny_pair: Callable[..., tuple[LensModel, Any]],
) -> None:
    model, ref = tiny_pair("llama")
    probe = replace(random_probe(model, ref, 1, "resid_post"), layer=5)
    with pytest.raises(ToxlensError, match="monitor probe reads 'resid_post' at layer 5"):
        generate(model, ["the cat"], 3, monitor=probe, threshold=0.9)
