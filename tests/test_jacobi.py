"""Speculative Jacobi decoding tests: greedy equivalence with plain decoding, exact sampling distribution (χ² against
a stub model whose joint distribution is known), KV-cache rollback, refusals."""

from __future__ import annotations

import itertools

import pytest
import torch
from scipy.stats import chisquare
from test_orders import KIND_FOR_ORDER, FakeTokenizer
from test_sampling import NUM_CLASSES, make
from torch import Tensor, nn

from argen.errors import ArgenError
from argen.model import KVCache, TransformerConfig
from argen.orders import build_order
from argen.samplers import SAMPLERS, SamplingEngine, generate, generate_jacobi, jacobi
from argen.samplers.logits import filter_top_k, guide

LABELS = torch.tensor([0, 1, 2])


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_easy(name: str):
    """A model whose next-token distribution ignores the tokens and is sharply peaked: drafts are easy to accept."""
    order, tokenizer, model = make(name)
    with torch.no_grad():
        model.token_embed.weight.zero_()
        for head in model.output_heads:
            head.weight.mul_(30.0)
    return order, tokenizer, model


# -- greedy: exactly plain decoding --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["raster", "neighbor"])
@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_greedy_jacobi_equals_greedy_plain_decoding(name, cfg_scale):
    order, tokenizer, model = make(name)
    plain = generate(model, order, tokenizer, labels=LABELS, cfg_scale=cfg_scale, temperature=0.0)
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    for window, init in itertools.product([1, 4, 16], ["random", "neighbor"]):
        jacobi_ids = generate_jacobi(
            model, order, tokenizer, labels=LABELS, cfg_scale=cfg_scale, temperature=0.0,
            window=window, init=init, generator=seeded(window),
        )  # fmt: skip
        assert torch.equal(jacobi_ids.ids[0], plain.ids[0]), (window, init)
        assert 1 <= jacobi_ids.forward_passes <= num_steps


@pytest.mark.parametrize("name", ["raster", "neighbor"])
def test_greedy_without_cache_and_with_linear_cfg_still_equals_plain_decoding(name):
    order, tokenizer, model = make(name)
    options = dict(labels=LABELS, cfg_scale=3.0, cfg_schedule="linear", temperature=0.0)
    plain = generate(model, order, tokenizer, **options)
    uncached = generate_jacobi(model, order, tokenizer, use_cache=False, window=3, **options)
    assert torch.equal(uncached.ids[0], plain.ids[0])


@pytest.mark.parametrize("name", ["raster", "neighbor"])
def test_easy_drafts_take_fewer_forward_passes_than_steps(name):
    order, tokenizer, model = make_easy(name)
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    plain = generate(model, order, tokenizer, labels=LABELS, temperature=0.0)
    greedy = generate_jacobi(model, order, tokenizer, labels=LABELS, temperature=0.0, window=num_steps)
    assert torch.equal(greedy.ids[0], plain.ids[0])
    # One call whose redrafts are the argmaxes, one that accepts them all.
    assert plain.forward_passes == num_steps and greedy.forward_passes == 2
    sampled = generate_jacobi(model, order, tokenizer, labels=LABELS, window=num_steps, generator=seeded(0))
    assert sampled.forward_passes < num_steps


# -- sampling: exactly the distribution of plain decoding ---------------------------------------------------------


class StubModel(nn.Module):
    """The transformer's interface with logits that are an explicit table lookup, so the joint is known exactly.

    The logits of target t are ``table[class, t, code]``, where ``code`` encodes the tokens of the targets of earlier
    steps, read from the positions they are fed at (inputs are targets shifted right behind the start token in
    raster and neighbor order). Which output position and head predicts each target is found by probing
    ``order.logits`` with one-hot outputs, so the neighbor order's two heads are served as the order reads them.
    The "KV cache" is a `KVCache` of width 1 that stores the fed ids, so that its ``rollback`` is the real one.
    """

    def __init__(self, order, tokenizer, *, num_classes: int = 0, scale: float = 1.0, seed: int = 0):
        super().__init__()
        self.config = TransformerConfig(num_classes=num_classes, **order.model_settings(tokenizer))
        self.anchor = nn.Parameter(torch.zeros(1))  # device and mode for the sampler
        self.order, self.layout = order, order.layout(tokenizer.grid_shapes)
        layout, vocab, heads = self.layout, self.config.vocab_size, self.config.num_heads_out
        length = layout.length
        self.vocab = vocab
        self.step_of_target = torch.empty(length, dtype=torch.long)
        for step, targets in enumerate(layout.targets_of_step):
            self.step_of_target[targets] = step
        probe = torch.eye(length * heads).view(1, length, heads, length * heads)
        weights = order.logits(probe if heads > 1 else probe[:, :, 0], layout)[0]  # (T, L·H) sources of each target
        self.predicts = torch.full((length, heads), -1, dtype=torch.long)  # target predicted by (position, head)
        for target, source in (weights > 0).nonzero().tolist():
            self.predicts[source // heads, source % heads] = target
        codes = (vocab + 1) ** length
        self.table = scale * torch.randn(num_classes + 1, length, codes, vocab, generator=seeded(seed))

    def new_cache(self, batch: int, *, capacity: int, **_) -> KVCache:
        return KVCache(layers=1, batch=batch, heads=1, head_dim=1, capacity=capacity)

    def code(self, target: int, fed: Tensor) -> Tensor:
        """(B,) code of the tokens of the targets of steps before ``target``'s, from the fed sequence (B, L')."""
        earlier = (self.step_of_target < self.step_of_target[target]).nonzero().flatten().tolist()
        code = torch.zeros(fed.shape[0], dtype=torch.long)
        for j in earlier:
            assert j + 1 < fed.shape[1], "a target was predicted before the tokens it depends on were fed"
            code += (fed[:, j + 1] + 1) * (self.vocab + 1) ** j
        return code

    def logits_of(self, target: int, fed: Tensor, labels: Tensor) -> Tensor:
        return self.table[labels, target, self.code(target, fed)]  # (B, V)

    def forward(self, inputs, labels=None, *, layout, index=None, cache=None, guidance=None):
        batch, length = inputs.shape
        index = torch.arange(length) if index is None else index
        if cache is None:
            assert torch.equal(index, torch.arange(length)), "without a cache the whole prefix is fed"
            fed = inputs
        else:
            assert int(index[0]) == cache.length, "fed positions must follow the cached ones"
            keys, _ = cache.update(0, inputs.float()[:, None, :, None], inputs.float()[:, None, :, None])
            fed = keys[:, 0, :, 0].long()  # (B, L') every position fed so far
            cache.advance(layout.step_of[index])
        labels = torch.full((batch,), self.config.num_classes) if labels is None else labels
        outputs = torch.zeros(batch, length, self.config.num_heads_out, self.vocab)
        for i, position in enumerate(index.tolist()):
            for head, target in enumerate(self.predicts[position].tolist()):
                if target >= 0:
                    outputs[:, i, head] = self.logits_of(target, fed, labels)
        if guidance is not None:  # the engine's contract: 2B rows in, B guided rows out
            scale = torch.as_tensor(guidance, dtype=outputs.dtype).reshape(1, -1, 1, 1)
            cond, uncond = outputs.chunk(2)
            outputs = guide(cond, uncond, scale)
        return outputs if self.config.num_heads_out > 1 else outputs[:, :, 0]

    def engine(self) -> SamplingEngine:
        """The stub as the samplers run it: an engine whose calls are the stub's own forward (guidance included)."""
        return StubEngine(self)

    def joint(self, *, label: int | None, cfg_scale: float, temperature: float, top_k: int) -> Tensor:
        """(V^T,) exact probability of each outcome, outcome index Σ_t x_t · V^t over targets in target order."""
        length, vocab, null = self.layout.length, self.vocab, self.config.num_classes
        probabilities = torch.zeros(vocab**length, dtype=torch.float64)
        for outcome in itertools.product(range(vocab), repeat=length):
            fed = torch.tensor([[vocab, *outcome[:-1]]])  # start token, then targets shifted right
            probability = 1.0
            for target, token in enumerate(outcome):
                cond = self.logits_of(target, fed, torch.tensor([null if label is None else label]))
                if cfg_scale != 1.0:
                    cond = guide(cond, self.logits_of(target, fed, torch.tensor([null])), cfg_scale)
                distribution = filter_top_k(cond / temperature, top_k).softmax(dim=-1)[0]
                probability *= float(distribution[token])
            index = sum(token * vocab**t for t, token in enumerate(outcome))
            probabilities[index] = probability
        return probabilities


SAMPLES = 20000

# (order, grid, vocab, window, init, cfg_scale, temperature, top_k): 64 or 81 outcomes each.
DISTRIBUTION_CASES = {
    "raster-random": ("raster", (1, 3), 4, 2, "random", 1.0, 1.0, 0),
    "raster-neighbor-topk": ("raster", (1, 3), 4, 1, "neighbor", 1.0, 0.8, 3),
    "neighbor-random-cfg": ("neighbor", (2, 2), 3, 1, "random", 2.0, 1.0, 0),
    "neighbor-neighbor": ("neighbor", (2, 2), 3, 2, "neighbor", 1.0, 1.0, 0),
}


class StubEngine(SamplingEngine):
    """Runs `StubModel.forward`, which has the engine's call signature, instead of a transformer's parts."""

    def __call__(self, inputs, labels, *, layout, index=None, cache=None, guidance=None):
        return self.model(inputs, labels, layout=layout, index=index, cache=cache, guidance=guidance)


def chi_square_of_sampler(case: str, sampler=generate_jacobi) -> float:
    """p-value of a χ² goodness-of-fit test of ``SAMPLES`` samples from ``sampler`` against the exact joint."""
    name, grid, vocab, window, init, cfg_scale, temperature, top_k = DISTRIBUTION_CASES[case]
    tokenizer = FakeTokenizer(KIND_FOR_ORDER[name], grid_shapes=[grid], codebook_size=vocab)
    order = build_order(name, tokenizer)
    model = StubModel(order, tokenizer, num_classes=2, seed=sum(map(ord, case)))
    label = 1
    output = sampler(
        model.engine(), order, tokenizer, labels=torch.full((SAMPLES,), label), cfg_scale=cfg_scale,
        temperature=temperature, top_k=top_k, window=window, init=init, generator=seeded(0),
    )  # fmt: skip
    targets = order.targets(output.ids)  # (N, T)
    outcomes = (targets * vocab ** torch.arange(targets.shape[1])).sum(dim=1)
    observed = torch.bincount(outcomes, minlength=vocab ** targets.shape[1]).double()
    expected = SAMPLES * model.joint(label=label, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k)
    assert float(observed[expected == 0].sum()) == 0, "sampled an outcome of probability 0"
    # χ² needs about 5 expected counts per bin: the rare outcomes are pooled, with the smallest other one if need be.
    order_by_count = expected.argsort()
    expected, observed = expected[order_by_count], observed[order_by_count]
    pooled = max(int((expected < 5).sum()), 1)
    if float(expected[:pooled].sum()) < 5:
        pooled += 1
    observed = torch.cat([observed[:pooled].sum().view(1), observed[pooled:]])
    expected = torch.cat([expected[:pooled].sum().view(1), expected[pooled:]])
    assert len(expected) >= 20 and float(expected.min()) >= 5
    expected = expected * observed.sum() / expected.sum()  # the float joint sums to 1 only up to rounding
    return float(chisquare(observed.numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize("case", list(DISTRIBUTION_CASES))
def test_jacobi_samples_follow_the_exact_joint_distribution(case):
    assert chi_square_of_sampler(case) > 0.001


def test_plain_decoding_passes_the_same_distribution_test():
    # The reference: plain decoding on the same stub (it ignores window and init).
    def plain(*args, window, init, **options):
        return generate(*args, **options)

    assert chi_square_of_sampler("raster-random", plain) > 0.001


def test_the_distribution_test_rejects_broken_verification(monkeypatch):
    """The χ² test has power: accepting every draft, or resampling a rejected one from p instead of
    norm(max(0, p - q)), gives samples it rejects."""
    real_verify = jacobi.verify

    def accept_always(drafts, p, q, *, generator):
        real_verify(drafts, p, q, generator=generator)
        return drafts, torch.ones_like(drafts, dtype=torch.bool)

    monkeypatch.setattr(jacobi, "verify", accept_always)
    assert chi_square_of_sampler("raster-random") < 1e-6

    def resample_from_p(drafts, p, q, *, generator):
        tokens, accepted = real_verify(drafts, p, q, generator=generator)
        return torch.where(accepted, drafts, jacobi.draw(p, generator)), accepted

    monkeypatch.setattr(jacobi, "verify", resample_from_p)
    assert chi_square_of_sampler("raster-random") < 1e-6


@pytest.mark.parametrize("name", ["raster", "neighbor"])
def test_seeds_make_sampling_reproducible(name):
    order, tokenizer, model = make(name)
    options = dict(labels=LABELS, cfg_scale=2.0, top_k=8, window=4)
    first = generate_jacobi(model, order, tokenizer, generator=seeded(1), **options)
    second = generate_jacobi(model, order, tokenizer, generator=seeded(1), **options)
    other = generate_jacobi(model, order, tokenizer, generator=seeded(2), **options)
    assert torch.equal(first.ids[0], second.ids[0]) and first.forward_passes == second.forward_passes
    assert not torch.equal(first.ids[0], other.ids[0])
    assert int(first.ids[0].min()) >= 0 and int(first.ids[0].max()) < tokenizer.codebook_size


# -- KV cache rollback ---------------------------------------------------------------------------------------------


class CacheSnapshots(SamplingEngine):
    """An engine that records, at the start of every model call, the cache's length, keys, values and steps, and the
    call's size."""

    def __init__(self, model):
        super().__init__(model)
        self.calls = []

    def __call__(self, inputs, labels, *, cache, **options):
        length = cache.length
        self.calls.append(
            {
                "length": length,
                "fed": inputs.shape[1],
                "keys": cache.keys[:, :, :, :length].clone(),
                "values": cache.values[:, :, :, :length].clone(),
                "steps": cache.steps[:length].clone(),
            }
        )
        return super().__call__(inputs, labels, cache=cache, **options)


@pytest.mark.parametrize("name", ["raster", "neighbor"])
def test_rolled_back_cache_equals_a_cache_of_the_accepted_tokens(name):
    order, tokenizer, model = make(name)
    layout = order.layout(tokenizer.grid_shapes)
    snapshots = CacheSnapshots(model)
    output = generate_jacobi(snapshots, order, tokenizer, labels=LABELS, cfg_scale=2.0, window=3, generator=seeded(0))
    calls = snapshots.calls
    assert len(calls) == output.forward_passes
    # Some call fed positions that the next one no longer finds in the cache: drafts were rejected and rolled back.
    assert any(after["length"] < before["length"] + before["fed"] for before, after in zip(calls, calls[1:]))
    inputs, _ = order.train_inputs(output.ids, tokenizer)
    inputs = torch.cat([inputs, inputs])  # conditional and null rows, as the sampler feeds them
    labels = torch.cat([LABELS, torch.full_like(LABELS, NUM_CLASSES)])
    for call in calls[1:]:
        length = call["length"]
        fresh = model.new_cache(2 * len(LABELS), capacity=layout.length)
        with torch.no_grad():
            model(inputs[:, :length], labels, layout=layout, index=torch.arange(length), cache=fresh)
        assert torch.allclose(call["keys"], fresh.keys[:, :, :, :length], atol=1e-5)
        assert torch.allclose(call["values"], fresh.values[:, :, :, :length], atol=1e-5)
        assert torch.equal(call["steps"], fresh.steps[:length])


# -- callback, refusals, registry ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["raster", "neighbor"])
def test_callback_sees_every_step_once_in_order(name):
    order, tokenizer, model = make(name)
    seen = []
    output = generate_jacobi(
        model, order, tokenizer, labels=LABELS, window=4, generator=seeded(0),
        callback=lambda step, ids: seen.append((step, ids[0])),
    )  # fmt: skip
    num_steps = order.layout(tokenizer.grid_shapes).num_steps
    assert [step for step, _ in seen] == list(range(num_steps))
    assert output.forward_passes <= num_steps
    assert torch.equal(seen[-1][1], output.ids[0])
    # What a callback saw of the steps up to its own is what the images finally hold.
    layout = order.layout(tokenizer.grid_shapes)
    for step, grid in seen:
        cells = layout.target_flat[torch.cat(layout.targets_of_step[: step + 1])]
        assert torch.equal(grid.flatten(1)[:, cells], output.ids[0].flatten(1)[:, cells])


@pytest.mark.parametrize("name", ["scale", "frequency"])
def test_orders_without_single_token_steps_are_refused(name):
    order, tokenizer, model = make(name)
    with pytest.raises(ArgenError, match="raster and neighbor"):
        generate_jacobi(model, order, tokenizer, labels=LABELS)


def test_bad_requests_are_refused_and_model_mode_is_restored():
    order, tokenizer, model = make("raster")
    for window in (0, -2, 2.5, True):
        with pytest.raises(ArgenError, match="window"):
            generate_jacobi(model, order, tokenizer, labels=LABELS, window=window)
    with pytest.raises(ArgenError, match="draft init"):
        generate_jacobi(model, order, tokenizer, labels=LABELS, init="zeros")
    with pytest.raises(ArgenError, match="temperature"):
        generate_jacobi(model, order, tokenizer, labels=LABELS, temperature=-1.0)
    with pytest.raises(ArgenError, match="classifier-free guidance"):
        generate_jacobi(model, order, tokenizer, batch_size=2, cfg_scale=2.0)
    with pytest.raises(ArgenError, match="batch_size"):
        generate_jacobi(model, order, tokenizer)
    model.train()
    generate_jacobi(model, order, tokenizer, batch_size=2, generator=seeded(0))  # unconditional: the null class
    assert model.training
    assert SAMPLERS["jacobi"] is generate_jacobi
