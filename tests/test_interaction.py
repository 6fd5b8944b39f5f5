"""Interaction blocks against direct (loop) formulas."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ctr.errors import ConfigError
from ctr.nn.attention import InteractingLayer, SelfAttentionStack, TransformerLayer, TransformerStack
from ctr.nn.cin import CIN
from ctr.nn.cross import CrossNet, CrossNetV2
from ctr.nn.gating import BilinearFusion, FeatureGating, MaskBlock
from ctr.nn.interaction import FM, Bilinear, InnerProduct, SENet, bilinear_products

B, NF, D = 5, 4, 3
ATOL = 1e-5


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def e() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(B, NF, D)


def pairs(n: int = NF) -> list[tuple[int, int]]:
    return list(itertools.combinations(range(n), 2))


def test_fm_matches_pair_loop(e: torch.Tensor) -> None:
    expected = sum((e[:, i] * e[:, j]).sum(-1) for i, j in pairs())
    torch.testing.assert_close(FM()(e), expected, atol=ATOL, rtol=1e-5)


def test_inner_product_matches_pair_loop(e: torch.Tensor) -> None:
    layer = InnerProduct(NF)
    expected = torch.stack([(e[:, i] * e[:, j]).sum(-1) for i, j in pairs()], dim=1)
    assert layer.out_dim == NF * (NF - 1) // 2
    torch.testing.assert_close(layer(e), expected, atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_matches_pair_loop(e: torch.Tensor, kind: str) -> None:
    torch.manual_seed(1)
    layer = Bilinear(NF, D, kind)
    out = []
    for p, (i, j) in enumerate(pairs()):
        w = layer.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[kind]]
        out.append((e[:, i] @ w) * e[:, j])
    torch.testing.assert_close(layer(e), torch.stack(out, dim=1), atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_gradients_match_autograd_of_the_pair_loop(kind: str) -> None:
    """Two inputs at once (FiBiNET's E and V): values and gradients of inputs and weights against autograd through
    the direct formula, in float64."""
    torch.manual_seed(2)
    layers = [Bilinear(NF, D, kind).double() for _ in range(2)]
    xs = [torch.randn(B, NF, D, dtype=torch.float64, requires_grad=True) for _ in range(2)]

    def direct() -> torch.Tensor:
        return torch.cat(
            [
                torch.stack(
                    [
                        (x[:, i] @ layer.weight[{"field_all": 0, "field_each": i, "field_interaction": p}[kind]])
                        * x[:, j]
                        for p, (i, j) in enumerate(pairs())
                    ],
                    1,
                ).flatten(1)
                for layer, x in zip(layers, xs)
            ],
            1,
        )

    leaves = [*xs, *(layer.weight for layer in layers)]
    g = torch.randn(B, 2 * len(pairs()) * D, dtype=torch.float64)
    expected = torch.autograd.grad(direct(), leaves, g)
    out = bilinear_products(list(zip(layers, xs)))
    torch.testing.assert_close(out, direct())
    for got, want in zip(torch.autograd.grad(out, leaves, g), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("kind", ["field_all", "field_each", "field_interaction"])
def test_bilinear_export_path_matches(e: torch.Tensor, kind: str) -> None:
    layer = Bilinear(NF, D, kind)
    torch.testing.assert_close(layer.gathered(e), layer(e), atol=ATOL, rtol=1e-5)


def test_senet_reweights_fields(e: torch.Tensor) -> None:
    layer = SENet(NF, reduction_ratio=2)
    w1, w2 = layer.excitation[0].weight, layer.excitation[2].weight
    a = F.relu(F.relu(e.mean(-1) @ w1.T) @ w2.T)  # (B, F)
    torch.testing.assert_close(layer(e), e * a[..., None], atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------ CIN


@pytest.mark.parametrize("rows_per_chunk", [1, 7, 1000])
def test_cin_outer_linear_gradients_match_the_materialised_product(monkeypatch, rows_per_chunk: int) -> None:
    """The chunked outer-product layer against autograd through the (B, D, H, F) product, in float64, with chunks
    of 1 row, of a size that does not divide B*D, and of all rows."""
    import ctr.nn.cin as cin_module

    torch.manual_seed(3)
    hp, h = 3, 5
    monkeypatch.setattr(cin_module, "ROWS_PER_CHUNK_BYTES", rows_per_chunk * hp * NF * 8)
    xk = torch.randn(B, D, hp, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(B, D, NF, dtype=torch.float64, requires_grad=True)
    linear = torch.nn.Linear(hp * NF, h, bias=False).double()
    g = torch.randn(B, D, h, dtype=torch.float64)
    leaves = [xk, x0, linear.weight]
    direct = linear((xk.unsqueeze(-1) * x0.unsqueeze(-2)).flatten(2))
    out = cin_module.cin_layer(xk, x0, linear)
    torch.testing.assert_close(out, direct)
    for got, want in zip(torch.autograd.grad(out, leaves, g), torch.autograd.grad(direct, leaves, g)):
        torch.testing.assert_close(got, want)


def cin_direct(cin: CIN, x0: torch.Tensor, norm=None, split_half: bool = False) -> torch.Tensor:
    """X^k_h = sum_{i,j} W^{k,h}_{ij} (X^{k-1}_i * X^0_j), written with explicit loops; p^k_h = sum_d X^k_h.
    With ``split_half`` (the released xDeepFM code), maps 0 .. H_k/2 - 1 of every layer but the last go on to the
    next layer and maps H_k/2 .. H_k - 1 to the output; the last layer's maps all go to the output."""
    m = x0.shape[1]
    xk, pooled = x0, []
    for k, linear in enumerate(cin.linears):
        w = linear.weight  # (H_k, H_{k-1} * m), column index i * m + j
        nxt = torch.zeros(x0.shape[0], w.shape[0], x0.shape[2])
        for h in range(w.shape[0]):
            for i in range(xk.shape[1]):
                for j in range(m):
                    nxt[:, h] += w[h, i * m + j] * xk[:, i] * x0[:, j]
        if norm is not None:  # statistics over the H_k maps at each position d
            nxt = norm(nxt.transpose(1, 2)).transpose(1, 2)
        if split_half and k < len(cin.linears) - 1:
            half = w.shape[0] // 2
            xk = nxt[:, :half]
            pooled.append(nxt[:, half:].sum(-1))
        else:
            xk = nxt
            pooled.append(xk.sum(-1))
    return torch.cat(pooled, dim=1)


def test_cin_matches_direct_formula(e: torch.Tensor) -> None:
    torch.manual_seed(2)
    cin = CIN(NF, D, [3, 2])
    assert cin.out_dim == 5
    torch.testing.assert_close(cin(e), cin_direct(cin, e), atol=ATOL, rtol=1e-5)


def test_cin_split_half_matches_direct_loop(e: torch.Tensor) -> None:
    torch.manual_seed(2)
    cin = CIN(NF, D, [4, 6, 3], split_half=True)
    assert [lin.in_features for lin in cin.linears] == [NF * NF, 2 * NF, 3 * NF]  # H_{k-1} / 2 maps go on
    assert cin.out_dim == 2 + 3 + 3
    torch.testing.assert_close(cin(e), cin_direct(cin, e, split_half=True), atol=ATOL, rtol=1e-5)
    ln = lambda x: F.layer_norm(x, x.shape[-1:])  # noqa: E731
    normed = CIN(NF, D, [4, 2], norm="ln_simple", split_half=True)  # the norm sees all H_k maps, then the split
    torch.testing.assert_close(normed(e), cin_direct(normed, e, ln, split_half=True), atol=1e-4, rtol=1e-4)


def test_cin_split_half_needs_even_hidden_layers() -> None:
    with pytest.raises(
        ConfigError, match=r"cin_layers \[3, 2\]: with split_half every layer but the last must be even"
    ):
        CIN(NF, D, [3, 2], split_half=True)
    assert CIN(NF, D, [4, 3], split_half=True).out_dim == 2 + 3  # the last layer may be odd


def test_cin_norm_takes_stats_over_feature_maps(e: torch.Tensor) -> None:
    torch.manual_seed(2)
    cin = CIN(NF, D, [4, 2], norm="ln_simple")
    ln = lambda x: F.layer_norm(x, x.shape[-1:])  # noqa: E731
    torch.testing.assert_close(cin(e), cin_direct(cin, e, ln), atol=1e-4, rtol=1e-4)
    assert cin(e).abs().sum() > 0  # pooling over D of maps normalised over H_k is not degenerate


def test_cin_wn_normalises_each_output_map() -> None:
    cin = CIN(NF, D, [3], norm="wn")
    g = cin.linears[0].parametrizations.weight.original0
    assert g.shape == (3, 1)
    torch.testing.assert_close(cin.linears[0].weight.norm(dim=1), g.squeeze(1).abs())


# ---------------------------------------------------------------------------------------------------------- cross


def test_cross_v1_matches_formula() -> None:
    torch.manual_seed(3)
    x0 = torch.randn(B, 6)
    net = CrossNet(6, 3)
    with torch.no_grad():
        net.biases.normal_()
    x = x0
    for layer in range(3):
        w, b = net.weights[layer].weight[0], net.biases[layer]
        x = x0 * (x @ w)[:, None] + b + x  # x_{l+1} = x0 * (x_l . w) + b + x_l
    torch.testing.assert_close(net(x0), x, atol=ATOL, rtol=1e-5)


def test_cross_v1_norm_and_wn() -> None:
    torch.manual_seed(3)
    x0 = torch.randn(B, 6)
    net = CrossNet(6, 1, norm="ln_simple")
    w = net.weights[0].weight[0]
    torch.testing.assert_close(net(x0), F.layer_norm(x0 * (x0 @ w)[:, None] + x0, (6,)), atol=ATOL, rtol=1e-5)
    wn = CrossNet(6, 1, norm="wn")
    param = wn.weights[0].parametrizations.weight
    assert param.original0.numel() == 1  # one gain for the whole vector
    torch.testing.assert_close(wn.weights[0].weight.norm(), param.original0.abs().squeeze())


def test_cross_v2_matches_formula() -> None:
    torch.manual_seed(4)
    x0 = torch.randn(B, 6)
    net = CrossNetV2(6, 2)
    x = x0
    for layer in net.layers:
        x = x0 * (x @ layer.w.weight.T + layer.w.bias) + x  # x_{l+1} = x0 * (W x_l + b) + x_l
    torch.testing.assert_close(net(x0), x, atol=ATOL, rtol=1e-5)


def test_cross_v2_low_rank_and_mixture_match_formula() -> None:
    torch.manual_seed(5)
    x0 = torch.randn(B, 6)
    low = CrossNetV2(6, 1, low_rank=2)
    v, u = low.layers[0].w[0], low.layers[0].w[1]
    torch.testing.assert_close(low(x0), x0 * ((x0 @ v.weight.T) @ u.weight.T + u.bias) + x0, atol=ATOL, rtol=1e-5)
    mix = CrossNetV2(6, 1, low_rank=2, num_experts=3)
    layer = mix.layers[0]
    gates = torch.softmax(x0 @ layer.gate.weight.T, dim=-1)
    expected = x0.clone()
    for k in range(3):
        inner = torch.tanh(torch.tanh(x0 @ layer.v[k].weight.T) @ layer.c[k].weight.T)
        expected = expected + gates[:, k : k + 1] * x0 * (inner @ layer.u[k].weight.T + layer.u[k].bias)
    torch.testing.assert_close(mix(x0), expected, atol=ATOL, rtol=1e-5)


def test_cross_v2_norm_follows_residual() -> None:
    torch.manual_seed(6)
    x0 = torch.randn(B, 6)
    net = CrossNetV2(6, 1, norm="ln_simple")
    w = net.layers[0].w
    expected = F.layer_norm(x0 * (x0 @ w.weight.T + w.bias) + x0, (6,))
    torch.testing.assert_close(net(x0), expected, atol=ATOL, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------ attention


def test_attention_matches_per_head_formula(e: torch.Tensor) -> None:
    torch.manual_seed(7)
    layer = InteractingLayer(NF, D, 4, heads=2)
    q, k, v = F.relu(layer.qkv(e)).split(4, dim=-1)  # (B, F, 4) each
    heads = []
    for h in range(2):
        sl = slice(2 * h, 2 * h + 2)
        att = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2**0.5, dim=-1)  # (B, F, F)
        heads.append(att @ v[..., sl])
    expected = F.relu(torch.cat(heads, -1) + F.relu(layer.res(e)))
    torch.testing.assert_close(layer(e), expected, atol=ATOL, rtol=1e-5)


def _record_norm_inputs(stack: SelfAttentionStack) -> list:
    seen = []
    for name, mod in stack.named_modules():
        if name.endswith("norm") and not isinstance(mod, torch.nn.Identity):
            mod.register_forward_hook(lambda m, inp, out, name=name: seen.append((name, inp[0], out)))
    return seen


def test_attention_post_norms_the_residual_sum(e: torch.Tensor) -> None:
    torch.manual_seed(8)
    stack = SelfAttentionStack(NF, D, [4, 4], heads=2, norm={"name": "ln", "position": "post"})
    seen = _record_norm_inputs(stack)
    layer_inputs = []
    for layer in stack.layers:
        layer.register_forward_hook(lambda m, inp, out: layer_inputs.append((inp[0], out)))
    out = stack(e)
    assert [n for n, _, _ in seen] == ["layers.0.norm", "layers.1.norm"]  # no final norm
    for (_, inp, nout), (_, lout) in zip(seen, layer_inputs):
        assert (inp >= 0).all()  # the norm sees ReLU(MHA + residual), not the layer input
        torch.testing.assert_close(nout, lout)  # and its output is the layer's output
    torch.testing.assert_close(out, seen[-1][2])


def test_attention_pre_norms_the_input_and_adds_a_final_norm(e: torch.Tensor) -> None:
    torch.manual_seed(8)
    stack = SelfAttentionStack(NF, D, [4, 4], heads=2, norm={"name": "ln", "position": "pre"})
    seen = _record_norm_inputs(stack)
    layer_inputs = []
    for layer in stack.layers:
        layer.register_forward_hook(lambda m, inp, out: layer_inputs.append((inp[0], out)))
    out = stack(e)
    assert [n for n, _, _ in seen] == ["layers.0.norm", "layers.1.norm", "final_norm"]
    torch.testing.assert_close(seen[0][1], e)  # layer 0's norm sees the raw input
    torch.testing.assert_close(seen[1][1], layer_inputs[1][0])  # layer 1's norm sees layer 1's input
    torch.testing.assert_close(seen[2][1], layer_inputs[1][1])  # the final norm sees the last layer's output
    torch.testing.assert_close(out, seen[2][2])


def test_attention_pre_residual_bypasses_the_norm(e: torch.Tensor) -> None:
    """Pre with zeroed attention values: the output is ReLU(Res(x)), with x un-normalised."""
    torch.manual_seed(9)
    layer = InteractingLayer(NF, D, 4, heads=2, norm={"name": "ln", "position": "pre"})
    with torch.no_grad():
        layer.qkv.weight[8:].zero_()  # V projection
        layer.qkv.bias[8:].zero_()
    torch.testing.assert_close(layer(e), F.relu(F.relu(layer.res(e))), atol=ATOL, rtol=1e-5)
    post = InteractingLayer(NF, D, 4, heads=2, norm={"name": "ln", "position": "post"})
    post.qkv.load_state_dict(layer.qkv.state_dict())
    post.res.load_state_dict(layer.res.state_dict())
    assert not torch.allclose(post(e), layer(e))


def test_attention_positions_agree_without_norm(e: torch.Tensor) -> None:
    torch.manual_seed(10)
    post = SelfAttentionStack(NF, D, [4, 4], heads=2, norm={"name": "none", "position": "post"})
    pre = SelfAttentionStack(NF, D, [4, 4], heads=2, norm={"name": "none", "position": "pre"})
    pre.load_state_dict(post.state_dict())
    torch.testing.assert_close(pre(e), post(e))


def test_attention_pre_is_scale_invariant_without_residual(e: torch.Tensor) -> None:
    layer = InteractingLayer(NF, D, 4, heads=2, norm={"name": "ln", "eps": 1e-12, "position": "pre"}, residual=False)
    torch.testing.assert_close(layer(10 * e), layer(e), atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------- transformer

A = 4  # transformer width (2 heads of 2)


def mha_direct(layer: TransformerLayer, x: torch.Tensor) -> torch.Tensor:
    """Multi-head self-attention written per head: softmax(q k^T / sqrt(d_h)) v, heads concatenated, W_O."""
    q, k, v = layer.qkv(x).split(A, dim=-1)  # (B, F, A) each
    heads = []
    for h in range(2):
        sl = slice(2 * h, 2 * h + 2)
        att = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / 2**0.5, dim=-1)  # (B, F, F)
        heads.append(att @ v[..., sl])
    return layer.out(torch.cat(heads, dim=-1))


def ffn_direct(layer: TransformerLayer, x: torch.Tensor) -> torch.Tensor:
    return layer.ffn2(F.relu(layer.ffn1(x)))


def ln_direct(norm: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over A with per-field gains and biases, from the definition."""
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + 1e-5) * norm.weight + norm.bias


def _transformer(position: str, in_dim: int = A) -> TransformerStack:
    torch.manual_seed(13)
    stack = TransformerStack(NF, in_dim, A, layers=2, heads=2, ffn_dim=6, norm={"name": "ln", "position": position})
    with torch.no_grad():
        for name, p in stack.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # gains and biases away from 1 and 0
    return stack


def test_transformer_post_ln_matches_hand_written_forward() -> None:
    """Post-LN: x = LN(x + MHA(x)); x = LN(x + FFN(x)), no final norm."""
    x = torch.randn(B, NF, A)
    stack = _transformer("post")
    h = x
    for layer in stack.layers:
        h = ln_direct(layer.norm1, h + mha_direct(layer, h))
        h = ln_direct(layer.norm2, h + ffn_direct(layer, h))
    assert isinstance(stack.final_norm, torch.nn.Identity)
    torch.testing.assert_close(stack(x), h, atol=ATOL, rtol=1e-5)


def test_transformer_pre_ln_matches_hand_written_forward() -> None:
    """Pre-LN: x = x + MHA(LN(x)); x = x + FFN(LN(x)), then a final LN."""
    x = torch.randn(B, NF, A)
    stack = _transformer("pre")
    h = x
    for layer in stack.layers:
        h = h + mha_direct(layer, ln_direct(layer.norm1, h))
        h = h + ffn_direct(layer, ln_direct(layer.norm2, h))
    torch.testing.assert_close(stack(x), ln_direct(stack.final_norm, h), atol=ATOL, rtol=1e-5)


def test_transformer_residual_is_the_identity() -> None:
    """With the output projection and the FFN's last Linear at 0, a pre layer returns its input unchanged."""
    x = torch.randn(B, NF, A) * 3
    for position, expected in (("pre", x), ("post", None)):
        layer = _transformer(position).layers[0]
        with torch.no_grad():
            for lin in (layer.out, layer.ffn2):
                lin.weight.zero_(), lin.bias.zero_()
        if expected is None:  # post: the identity path passes through both norms
            expected = ln_direct(layer.norm2, ln_direct(layer.norm1, x))
        torch.testing.assert_close(layer(x), expected, atol=ATOL, rtol=1e-5)


def test_transformer_positions_agree_without_norm_and_project_other_widths() -> None:
    x = torch.randn(B, NF, D)  # D = 3 != A: a bias-free projection to A first
    torch.manual_seed(14)
    post = TransformerStack(NF, D, A, layers=2, heads=2, ffn_dim=6, norm={"name": "none", "position": "post"})
    pre = TransformerStack(NF, D, A, layers=2, heads=2, ffn_dim=6, norm={"name": "none", "position": "pre"})
    pre.load_state_dict(post.state_dict())
    torch.testing.assert_close(pre(x), post(x))
    assert post.project.weight.shape == (A, D) and post.project.bias is None
    h = x @ post.project.weight.T
    for layer in post.layers:
        h = h + mha_direct(layer, h)
        h = h + ffn_direct(layer, h)
    torch.testing.assert_close(post(x), h, atol=ATOL, rtol=1e-5)


def test_transformer_wn_reparametrises_every_linear() -> None:
    stack = TransformerStack(NF, D, A, layers=1, heads=2, ffn_dim=6, norm={"name": "wn", "position": "pre"})
    layer = stack.layers[0]
    for lin in (stack.project, layer.qkv, layer.out, layer.ffn1, layer.ffn2):
        assert hasattr(lin, "parametrizations")
    assert all(isinstance(m, torch.nn.Identity) for m in (layer.norm1, layer.norm2, stack.final_norm))


def test_transformer_width_must_split_into_heads() -> None:
    with pytest.raises(ConfigError, match="attention width 5 is not divisible by 2 heads"):
        TransformerLayer(NF, 5, heads=2, ffn_dim=4)


# --------------------------------------------------------------------------------------------------------- gating


def test_mask_block_matches_formula() -> None:
    torch.manual_seed(11)
    v_emb, v_in = torch.randn(B, 6), torch.randn(B, 5)
    block = MaskBlock(6, 5, 3, reduction_ratio=2.0, norm="ln_simple")
    l1, l2 = block.mask[0], block.mask[2]
    assert l1.out_features == 10
    mask = F.relu(v_emb @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias
    hidden = block.hidden.net[0]
    expected = F.relu(F.layer_norm((mask * v_in) @ hidden.weight.T + hidden.bias, (3,)))  # Linear -> LN -> ReLU
    torch.testing.assert_close(block(v_emb, v_in), expected, atol=ATOL, rtol=1e-5)


def test_feature_gating_scales_into_0_2(e: torch.Tensor) -> None:
    gate = FeatureGating(NF, D, [8])
    g = 2 * torch.sigmoid(gate.gate(gate.context))
    torch.testing.assert_close(gate(e), e.flatten(1) * g)
    assert ((g > 0) & (g < 2)).all()


def test_bilinear_fusion_matches_head_loop() -> None:
    torch.manual_seed(12)
    o1, o2 = torch.randn(B, 4), torch.randn(B, 6)
    fusion = BilinearFusion(4, 6, heads=2)
    expected = fusion.w1(o1).squeeze(-1) + fusion.w2(o2).squeeze(-1)
    for h in range(2):
        expected = expected + torch.einsum(
            "bi,ij,bj->b", o1[:, 2 * h : 2 * h + 2], fusion.w12[h], o2[:, 3 * h : 3 * h + 3]
        )
    torch.testing.assert_close(fusion(o1, o2), expected, atol=ATOL, rtol=1e-5)
