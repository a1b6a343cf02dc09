"""PyTorch references for softmax/log_softmax (large logits), reductions, pointwise ops and gather/scatter."""
import torch


def generate(w):
    g = torch.Generator().manual_seed(0)
    d = torch.float64
    x = torch.randn(4, 7, 5, generator=g, dtype=d) * 30.0  # large logits
    x[0, 0, 0] = 1000.0
    x[1, 2, 3] = -1000.0
    gy = torch.randn(4, 7, 5, generator=g, dtype=d)
    t = {"x": x, "gy": gy}
    for name, ax in (("1", 1), ("m1", -1), ("0", 0)):
        t["softmax_" + name] = torch.softmax(x, ax)
        t["log_softmax_" + name] = torch.log_softmax(x, ax)
        xr = x.clone().requires_grad_()
        torch.softmax(xr, ax).backward(gy)
        t["softmax_" + name + "_grad"] = xr.grad
        xr = x.clone().requires_grad_()
        torch.log_softmax(xr, ax).backward(gy)
        t["log_softmax_" + name + "_grad"] = xr.grad
    x32 = x.float()
    t["x32"] = x32
    t["softmax_m1_f32"] = torch.softmax(x32, -1)
    t["log_softmax_m1_f32"] = torch.log_softmax(x32, -1)
    t["logsumexp_1"] = torch.logsumexp(x, 1)
    t["sum_02"] = x.sum((0, 2))
    t["sum_all"] = x.sum()
    t["mean_m1_keep"] = x.mean(-1, keepdim=True)
    t["mean_01"] = x.mean((0, 1))
    t["amax_12"] = x.amax((1, 2))
    t["amin_0"] = x.amin(0)
    mx = x.max(1)
    t["max_1_values"] = mx.values
    t["max_1_indices"] = mx.indices
    # pointwise over a wide range (sigmoid/tanh saturate; no NaN/Inf allowed)
    p = torch.linspace(-120.0, 120.0, 49, dtype=d)
    t["p"] = p
    t["sigmoid_p"] = torch.sigmoid(p)
    t["tanh_p"] = torch.tanh(p)
    t["sigmoid_p_f32"] = torch.sigmoid(p.float())
    q = torch.rand(30, generator=g, dtype=d) * 4.0 + 0.05
    t["q"] = q
    t["pow_q_1_7"] = q.pow(1.7)
    t["pow_q_m0_5"] = q.pow(-0.5)
    t["log_q"] = q.log()
    t["sqrt_q"] = q.sqrt()
    # gather / scatter_add / index_select
    src = torch.randn(3, 6, generator=g, dtype=d)
    idx = torch.randint(0, 4, (3, 6), generator=g)
    base = torch.randn(3, 4, generator=g, dtype=d)
    t["src"] = src
    t["idx"] = idx
    t["base"] = base
    t["scatter_add_1"] = base.scatter_add(1, idx, src)
    t["gather_1"] = base.gather(1, idx)
    idx0 = torch.randint(0, 3, (2, 4), generator=g)
    t["idx0"] = idx0
    t["gather_0"] = base.gather(0, idx0)
    t["scatter_add_0"] = base.scatter_add(0, idx0, src[:2, :4])
    sel = torch.tensor([3, 0, 3, 1])
    t["sel"] = sel
    t["index_select_1"] = base.index_select(1, sel)
    w.save("pointwise", t, {"origin": "tests/ref/gen_pointwise.py"})
