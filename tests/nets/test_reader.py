"""Reading shaped models (conv, BatchNorm, pooling, skip connections, traced forwards) into the
counters' chain: the lowered forward equals the model's own, counts equal an independently
folded dense model's, and what cannot be read is one InputError line."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional

from relu_regions import InputError
from relu_regions.analysis.plane import count_regions_plane
from relu_regions.analysis.regions import count_regions_segment
from relu_regions.gmp.layers import GmPConv2d
from relu_regions.nets.parametrize import ConstructionNet
from relu_regions.nets.reader import forward, layer_stack, lower


def randomize(model, seed):
    """Weights, biases, BatchNorm statistics and PReLU slopes drawn from one seed; eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.named_parameters():
            t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * 1.6 - 0.8)
            if "weight" in name and t.dim() == 1:  # BatchNorm scale, PReLU slope: positive
                t.copy_(t.abs() + 0.1)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def assert_same_function(model, shape, n=200, seed=0, reference=None):
    """The lowered chain's float64 forward equals the model's own (in float64) on random inputs."""
    low = lower(model, shape)
    x = torch.randn(n, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    ref_model = reference if reference is not None else model
    with torch.no_grad():
        want = ref_model.double()(x).reshape(n, -1).numpy()
    got = forward(low.layers, low.leaks, x.reshape(n, -1).numpy())
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * max(1.0, np.abs(want).max()))
    return low


# -- Sequential models ------------------------------------------------------------------------
def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
        nn.ZeroPad2d((1, 0, 0, 1)), nn.Conv2d(4, 6, 3, stride=2, groups=2, dilation=1),
        nn.PReLU(6), nn.Dropout(0.3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Identity(),
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU6(), nn.Linear(8, 10), nn.LogSoftmax(1))


def test_a_conv_batchnorm_pooling_classifier_lowers_to_its_own_function():
    model = randomize(cnn(), 1)
    low = assert_same_function(model, (1, 8, 8), reference=model[:-1])
    assert low.layers[-1][0].shape[0] == 10 and low.input_shape == (1, 8, 8)
    slopes = model[6].weight.detach().double().numpy()  # PReLU: one per channel of (6, 2, 2)
    np.testing.assert_array_equal(low.leaks[1], np.repeat(slopes, 4))
    assert low.layers[2][0].shape[0] == 16  # ReLU6: two units per value
    assert any("LogSoftmax is dropped" in note for note in low.notes)


def test_a_float32_model_is_counted_in_float64_with_a_note():
    model = randomize(cnn(), 2).float()
    low = lower(model, (1, 8, 8))
    assert any("float32" in note and "float64" in note for note in low.notes)
    assert next(model.parameters()).dtype == torch.float32  # the user's model is not changed
    assert_same_function(model, (1, 8, 8), reference=model[:-1])
    assert lower(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))).notes[0].startswith(
        "the model's weights are float32")
    assert lower(nn.Sequential(nn.Linear(2, 1, dtype=torch.float64))).notes == []


@pytest.mark.parametrize("layers, shape", [
    ([nn.Conv1d(2, 3, 3, padding=2, dilation=2), nn.BatchNorm1d(3), nn.LeakyReLU(0.2),
      nn.AvgPool1d(2), nn.Flatten(), nn.Linear(6, 3)], (2, 4)),
    ([nn.Flatten(), nn.Linear(12, 12), nn.Unflatten(1, (3, 2, 2)), nn.Hardtanh(-0.5, 0.3),
      nn.Conv2d(3, 2, 2), nn.PReLU(), nn.AdaptiveAvgPool1d(1) if False else nn.Flatten(),
      nn.Linear(2, 2)], (3, 2, 2)),
    ([nn.ConstantPad2d(1, 0.5), nn.Conv2d(1, 2, 2, stride=2), nn.ReLU(), nn.Flatten(),
      nn.Linear(8, 1)], (1, 3, 3)),
    ([nn.Linear(4, 5), nn.Sequential(nn.LeakyReLU(0.1), nn.Linear(5, 5)), nn.Dropout(0.5),
      nn.ReLU(), nn.Linear(5, 2), nn.Softmax(-1)], (4,)),
])
def test_sequential_layers_lower_exactly(layers, shape):
    model = randomize(nn.Sequential(*layers), 3)
    ref = model[:-1] if isinstance(layers[-1], nn.Softmax) else model
    assert_same_function(model, shape, reference=ref)


def test_gmp_conv_lowers_as_its_plain_convolution():
    conv = randomize(nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64), 4)
    gmp = GmPConv2d.from_conv(conv)
    model = nn.Sequential(gmp, nn.ReLU(), nn.Flatten(), nn.Linear(48, 2, dtype=torch.float64))
    low = assert_same_function(model, (2, 4, 4))
    plain = lower(nn.Sequential(conv, nn.ReLU(), nn.Flatten(), model[3]), (2, 4, 4))
    for (w1, b1), (w2, b2) in zip(low.layers, plain.layers, strict=True):
        np.testing.assert_allclose(w1, w2, atol=1e-14)
        np.testing.assert_allclose(b1, b2, atol=1e-14)


def test_input_shape_comes_from_the_model_or_the_argument():
    model = randomize(nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(),
                                    nn.Linear(8, 1)), 5)
    with pytest.raises(InputError, match=r"pass input_shape= \(C, H, W\)"):
        lower(model)
    model.input_shape = (1, 3, 3)
    assert lower(model).layers[0][0].shape == (8, 9)
    with pytest.raises(InputError, match="input channels gets values of shape"):
        lower(model, (2, 3, 3))
    with pytest.raises(InputError, match="does not match the model's 3 inputs"):
        lower(nn.Sequential(nn.Linear(3, 1)), (4,))


# -- the fast path is unchanged ---------------------------------------------------------------
def test_dense_models_are_read_as_before():
    net = ConstructionNet.build(5, peaks=0.4)
    layers, leaks = layer_stack(net)
    with torch.no_grad():
        want = [(w.numpy(), b.numpy()) for w, b in net.construction.weights()]
    for (w, b), (w0, b0) in zip(layers, want, strict=True):
        assert np.array_equal(w, w0) and np.array_equal(b, b0)
    mlp = nn.Sequential(nn.Linear(2, 3, dtype=torch.float64), nn.ReLU(),
                        nn.Linear(3, 1, dtype=torch.float64))
    (w1, _), (w2, _) = layer_stack(mlp)[0]
    assert np.array_equal(w1, mlp[0].weight.detach().numpy())
    assert np.array_equal(w2, mlp[2].weight.detach().numpy())


# -- counts against an independently folded dense model -----------------------------------------
def conv_matrix(conv, shape):
    """The dense matrix of a Conv2d on C-order flattened (C, H, W) inputs, by its definition
    (loops over output positions and kernel taps), and its bias per output."""
    c, h, w = shape
    weight = conv.weight.detach().double().numpy()
    kh, kw = conv.kernel_size
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    oh, ow = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out_c, group_in = weight.shape[:2]
    per_group = out_c // conv.groups
    mat = np.zeros((out_c, oh, ow, c, h, w))
    for o in range(out_c):
        g = o // per_group
        for i in range(oh):
            for j in range(ow):
                for ci in range(group_in):
                    for a in range(kh):
                        for bb in range(kw):
                            y, x = i * sh - ph + a * dh, j * sw - pw + bb * dw
                            if 0 <= y < h and 0 <= x < w:
                                mat[o, i, j, g * group_in + ci, y, x] += weight[o, ci, a, bb]
    bias = np.repeat(conv.bias.detach().double().numpy(), oh * ow)
    return mat.reshape(out_c * oh * ow, c * h * w), bias, (out_c, oh, ow)


def dense_fold(model, shape):
    """Conv2d, BatchNorm2d (eval), AvgPool2d(2), Flatten, Linear, ReLU folded by hand into an
    nn.Sequential of Linear and ReLU."""
    mods, w, b = [], np.eye(int(np.prod(shape))), np.zeros(int(np.prod(shape)))
    for m in model:
        if isinstance(m, nn.Conv2d):
            mat, bias, shape = conv_matrix(m, shape)
            w, b = mat @ w, mat @ b + bias
        elif isinstance(m, nn.BatchNorm2d):
            scale = (m.weight / torch.sqrt(m.running_var + m.eps)).detach().double().numpy()
            shift = m.bias.detach().double().numpy() - m.running_mean.double().numpy() * scale
            per = int(np.prod(shape[1:]))
            w, b = np.repeat(scale, per)[:, None] * w, np.repeat(scale, per) * b + np.repeat(
                shift, per)
        elif isinstance(m, nn.AvgPool2d):
            c, h, ww = shape
            pool = np.zeros((c, h // 2, ww // 2, c, h, ww))
            for ch in range(c):
                for i in range(h // 2):
                    for j in range(ww // 2):
                        pool[ch, i, j, ch, 2 * i:2 * i + 2, 2 * j:2 * j + 2] = 0.25
            shape = (c, h // 2, ww // 2)
            pool = pool.reshape(-1, c * h * ww)
            w, b = pool @ w, pool @ b
        elif isinstance(m, nn.Linear):
            lw, lb = m.weight.detach().double().numpy(), m.bias.detach().double().numpy()
            w, b = lw @ w, lw @ b + lb
        elif isinstance(m, nn.ReLU):
            mods += [_linear(w, b), nn.ReLU()]
            w, b = np.eye(w.shape[0]), np.zeros(w.shape[0])
    return nn.Sequential(*mods, _linear(w, b))


def _linear(w, b):
    lin = nn.Linear(w.shape[1], w.shape[0], dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.as_tensor(w))
        lin.bias.copy_(torch.as_tensor(b))
    return lin


def test_a_conv_model_counts_like_its_dense_fold():
    model = randomize(nn.Sequential(
        nn.Conv2d(1, 3, 2, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(3, 4, 2, stride=1, groups=1), nn.ReLU(), nn.Flatten(), nn.Linear(4, 5),
        nn.ReLU(), nn.Linear(5, 1)), 6).double()
    model.input_shape = (1, 3, 3)
    dense = dense_fold(model, (1, 3, 3))
    x = torch.randn(100, 1, 3, 3, dtype=torch.float64)
    with torch.no_grad():  # the hand fold is right
        np.testing.assert_allclose(dense(x.reshape(100, -1)), model(x), atol=1e-12)
    g = np.random.default_rng(0)
    p0, p1, p2 = g.normal(size=(3, 9)) * 2
    ours, theirs = (count_regions_plane(m, p0, p1, p2) for m in (model, dense))
    assert ours.activation_regions == theirs.activation_regions > 10
    assert ours.linear_pieces == theirs.linear_pieces
    ours, theirs = (count_regions_segment(m, p0 * 3, p1 * 3) for m in (model, dense))
    assert ours.activation_regions == theirs.activation_regions > 3
    assert ours.linear_pieces == theirs.linear_pieces


# -- traced forwards: skip connections ----------------------------------------------------------
class ResidualMLP(nn.Module):
    """x + W2 relu(W1 x + b1) + b2, twice, then a head."""

    def __init__(self, d=3, h=5, k=1):
        super().__init__()
        self.a1, self.b1 = nn.Linear(d, h), nn.Linear(h, d)
        self.a2, self.b2 = nn.Linear(d, h), nn.Linear(h, d)
        self.head = nn.Linear(d, k)

    def forward(self, x):
        x = x + self.b1(functional.relu(self.a1(x)))
        x = x + self.b2(torch.relu(self.a2(x)))
        return self.head(x)


def residual_dense(model, big=1e3):
    """Its explicit dense form: x rides through each ReLU layer as relu(x + big) - big, which
    never switches on inputs counted below (|x| << big)."""
    d = model.a1.in_features
    mods, w_in, b_in = [], np.eye(d), np.zeros(d)
    for a, b in ((model.a1, model.b1), (model.a2, model.b2)):
        aw, ab = a.weight.detach().double().numpy(), a.bias.detach().double().numpy()
        bw, bb = b.weight.detach().double().numpy(), b.bias.detach().double().numpy()
        mods += [_linear(np.vstack([aw @ w_in, w_in]), np.concatenate([aw @ b_in + ab,
                                                                      b_in + big])), nn.ReLU()]
        w_in, b_in = np.hstack([bw, np.eye(d)]), bb - big
    hw, hb = model.head.weight.detach().double().numpy(), model.head.bias.detach().double().numpy()
    return nn.Sequential(*mods, _linear(hw @ w_in, hw @ b_in + hb))


def test_residual_blocks_count_like_their_explicit_dense_form():
    model = randomize(ResidualMLP(), 7).double()
    low = assert_same_function(model, (3,))
    assert [leak.tolist().count(1.0) for leak in low.leaks] == [3, 3]  # x carried, never split
    dense = residual_dense(model)
    x = torch.randn(50, 3, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_allclose(dense(x), model(x), atol=1e-9)
    g = np.random.default_rng(1)
    p0, p1, p2 = g.normal(size=(3, 3)) * 3
    ours, theirs = (count_regions_plane(m, p0, p1, p2) for m in (model, dense))
    assert ours.activation_regions == theirs.activation_regions > 5
    assert ours.linear_pieces == theirs.linear_pieces
    ours, theirs = (count_regions_segment(m, p0, p1) for m in (model, dense))
    assert ours.activation_regions == theirs.activation_regions


class BasicBlock(nn.Module):
    """A ResNet basic block: relu(x + bn(conv(relu(bn(conv(x)))))), then pooling and a head."""

    def __init__(self, c=2):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 3)

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        out = functional.relu(x + self.bn2(self.conv2(out)))
        out = functional.adaptive_avg_pool2d(out, 1)
        out = out.view(out.size(0), -1)
        return functional.log_softmax(self.head(out), dim=1)


def test_a_resnet_basic_block_is_traced():
    model = randomize(BasicBlock(), 8)
    low = lower(model, (2, 4, 4))
    assert any("log_softmax is dropped" in note for note in low.notes)
    x = torch.randn(100, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        want = model.double().head(functional.adaptive_avg_pool2d(functional.relu(
            x + model.bn2(model.conv2(model.bn1(model.conv1(x)).relu()))), 1).flatten(1))
    np.testing.assert_allclose(forward(low.layers, low.leaks, x.reshape(100, -1).numpy()),
                               want.numpy(), atol=1e-12)


class Ops(nn.Module):
    """Methods, functions and constants in one forward."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(6, 4)
        self.register_buffer("proj", torch.randn(4, 3))
        self.scale = nn.Parameter(torch.rand(3) + 0.5)

    def forward(self, x):
        h = x.flatten(1)
        h = torch.cat([self.lin(h), -h[:, :4]], dim=1).view(-1, 2, 4)
        h = h.mean(1) * 2.0 - 1.0
        h = torch.clamp(h, min=-0.5) + functional.leaky_relu(h, 0.3) + functional.hardtanh(h)
        h = (h @ self.proj) * self.scale / 3
        return torch.clamp(h, max=0.2) + functional.relu6(h) - torch.sum(h, dim=1, keepdim=True)


def test_traced_methods_and_functions():
    model = randomize(Ops(), 9)
    assert_same_function(model, (2, 3))


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(3, 5), st.booleans(), st.booleans(),
       st.integers(0, 10 ** 6))
def test_random_conv_residual_pooling_nets(channels, size, residual, pool, seed):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.bn = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, 2, 2, stride=2 if pool else 1)
            self.head = nn.LazyLinear(2) if False else None
            n = 2 * ((size // 2) ** 2 if pool else (size - 1) ** 2)
            self.head = nn.Linear(n, 2)

        def forward(self, x):
            h = functional.leaky_relu(self.bn(self.conv(x)), 0.1)
            if residual:  # a Python constant at trace time: fine
                h = h + x
            h = functional.relu(self.conv2(h))
            return self.head(torch.flatten(h, 1))

    assert_same_function(randomize(Net(), seed), (channels, size, size), n=50, seed=seed)


# -- refusals --------------------------------------------------------------------------------
class Product(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.a(x) * self.b(x)


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 1)

    def forward(self, x):
        if x.sum() > 0:
            return self.a(x)
        return -self.a(x)


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 1)

    def forward(self, x, y):
        return self.a(x + y)


class MaxReduction(nn.Module):
    def forward(self, x):
        return torch.max(x, 1, keepdim=True).values


def _meta():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))


def _train_bn():
    return nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1))


@pytest.mark.parametrize("make, shape, fragment", [
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)), None,
     "Tanh is not piecewise linear"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.GELU(), nn.Linear(3, 1)), None,
     "GELU is not piecewise linear"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)), None,
     "Sigmoid is not piecewise linear"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.Softmax(1), nn.Linear(3, 1)), None,
     "Softmax inside the model"),
    (_train_bn, None, r"training mode .*call model.eval\(\)"),
    (lambda: nn.Sequential(nn.Linear(2, 3), nn.Dropout(0.1), nn.Linear(3, 1)), None,
     r"training mode .*call model.eval\(\)"),
    (_meta, None, "meta device"),
    (lambda: nn.Sequential(nn.Conv2d(1, 1, 2), nn.MaxPool2d(2, ceil_mode=True)), (1, 5, 5),
     "ceil_mode=True is not supported"),
    (lambda: nn.Sequential(nn.Conv2d(1, 1, 2), nn.MaxPool2d(2, return_indices=True)),
     (1, 5, 5), "return_indices=True is not supported"),
    (lambda: nn.Sequential(nn.Conv3d(1, 1, 2), nn.MaxPool3d(2)), (1, 5, 5, 5),
     "MaxPool3d is not supported"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.MaxPool1d(2)), (4,),
     r"MaxPool1d gets values of shape \(4,\).*\(C, L\)"),
    (MaxReduction, (3,), r"max\(x\) or max\(x, dim\).*torch.maximum"),
    (Product, (2,), r"x \* y"),
    (Branchy, (2,), "data-dependent control flow"),
    (TwoInputs, (2,), "takes 2 inputs"),
    (lambda: nn.Sequential(nn.Linear(2, 2), nn.Bilinear(2, 2, 1)), None,
     "Bilinear cannot be read"),
])
def test_refusals_are_one_line(make, shape, fragment):
    model = make()
    with pytest.raises(InputError, match=fragment) as info:
        lower(model, shape)
    assert "\n" not in str(info.value)
