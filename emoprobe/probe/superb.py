"""The SUPERB emotion head as a probe: a softmax-weighted sum of every layer's pooled vector,
learned jointly with one linear layer.

SUPERB's head (weighted sum of hidden states, Linear, mean over time, Linear) is linear after
the weighted sum, and mean pooling commutes with it, so on pooled vectors its function class
is exactly `softmax(a) . [x_0 ... x_L]` followed by an affine map. The objective is the
per-layer probe's (cross-entropy + L2 on the weights, not on `a` or the intercept), so the
same C grid and validation choice apply. `a` starts at zero (uniform weights, as SUPERB).

Each layer enters standardised with statistics fitted on the fitting rows, as in the
per-layer probes: layers of self-supervised models differ in scale by an order of magnitude,
and without it the softmax weights would mostly compensate for scale instead of measuring
how useful a layer is. Pass mean 0 and scale 1 (in raw coordinates) to use raw vectors, the
literal SUPERB input.
"""

from __future__ import annotations

import torch

from emoprobe.probe.linear import ObjectiveBase

Tensor = torch.Tensor


class WeightedSumObjective(ObjectiveBase):
    """Batched objective of U weighted-sum probes over the same L layers.

    X: (L, n, D) float32 rows; weight: (U, n) sample weights; mean/scale: (L, U, D) per-layer
    standardisation of each problem; lam: (U,) L2 strength in the mean-scaled objective.
    Parameters per problem: a (L), W (K, D), b (K), flattened in that order.
    """

    def __init__(self, X: Tensor, y: Tensor, n_classes: int, weight: Tensor, mean: Tensor,
                 scale: Tensor, lam: Tensor) -> None:
        super().__init__(X, y, n_classes, weight, mean, scale, lam)
        self.n_probs = self.n_problems
        self.y_index = y.view(1, 1, -1).expand(self.n_probs, 1, -1)

    @property
    def size(self) -> int:
        return self.n_layers + self.n_classes * self.dim + self.n_classes

    def unpack(self, flat: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        L, K, D = self.n_layers, self.n_classes, self.dim
        a = flat[:, :L]
        W = flat[:, L : L + K * D].reshape(-1, K, D)
        b = flat[:, L + K * D :]
        return a, W, b

    def init(self) -> Tensor:
        return torch.zeros((self.n_probs, self.size), dtype=torch.float64)

    def _per_layer(self, W: Tensor, X: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-layer logits without the layer weight: (L, U, K, n), and w_eff (L, U, K, D)."""
        L, U, K, D = self.n_layers, self.n_probs, self.n_classes, self.dim
        w_eff = W[None] / self.scale[:, :, None, :]
        off = (w_eff * self.mean[:, :, None, :]).sum(-1)  # (L, U, K)
        XT = self.XT if X is None else X.transpose(1, 2)
        z = torch.bmm(w_eff.reshape(L, U * K, D).to(torch.float32), XT).view(L, U, K, -1)
        return z - off.to(torch.float32)[..., None], w_eff

    def layer_weights(self, flat: Tensor) -> Tensor:
        return torch.softmax(self.unpack(flat)[0], dim=1)

    def logits(self, flat: Tensor, X: Tensor | None = None) -> Tensor:
        """(U, K, n) logits of every problem on X (default: the training rows)."""
        a, W, b = self.unpack(flat)
        alpha = torch.softmax(a, dim=1).to(torch.float32)  # (U, L)
        per, _ = self._per_layer(W, X)
        return torch.einsum("lukn,ul->ukn", per, alpha) + b.to(torch.float32)[..., None]

    def __call__(self, flat: Tensor, need: Tensor | None = None) -> tuple[Tensor, Tensor]:
        L, U, K, D = self.n_layers, self.n_probs, self.n_classes, self.dim
        a, W, b = self.unpack(flat)
        alpha = torch.softmax(a, dim=1)
        per, _ = self._per_layer(W, None)
        z = torch.einsum("lukn,ul->ukn", per, alpha.to(torch.float32))
        z += b.to(torch.float32)[..., None]
        lse = torch.logsumexp(z, dim=1)  # (U, n)
        zy = z.gather(1, self.y_index).squeeze(1)
        ce = (lse - zy).to(torch.float64)
        f = (ce * self.wn.to(torch.float64)).sum(-1) + 0.5 * self.lam * (W * W).sum((-1, -2))
        resid = torch.exp(z - lse[:, None, :])
        resid -= self.onehot
        resid *= self.wn[:, None, :]  # (U, K, n)
        # d f / d alpha_l = <resid, per-layer logits without intercept>
        g_alpha = torch.einsum("ukn,lukn->ul", resid, per).to(torch.float64)
        g_a = alpha * (g_alpha - (alpha * g_alpha).sum(1, keepdim=True))
        rep = resid.reshape(1, U * K, -1).expand(L, -1, -1)
        g_eff = torch.bmm(rep, self.X).view(L, U, K, D).to(torch.float64)
        g_b = resid.sum(-1).to(torch.float64)  # (U, K)
        g_lay = (g_eff - g_b[None, :, :, None] * self.mean[:, :, None, :]) / self.scale[
            :, :, None, :
        ]
        g_w = (g_lay * alpha.T[:, :, None, None]).sum(0) + self.lam[:, None, None] * W
        grad = torch.cat([g_a, g_w.reshape(U, K * D), g_b], dim=1)
        return f, grad
