"""k-means++ seeding (Arthur & Vassilvitskii, 2007), shared by the small VQ tokenizers.

Each next centre is drawn with probability proportional to `w(x) D(x)^2`, the (weighted)
squared distance of a point to its nearest centre so far; a point already chosen has
distance 0 and is never drawn again.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["kmeans_plus_plus"]


def kmeans_plus_plus(
    points: Float[Tensor, "n dim"],
    k: int,
    generator: torch.Generator,
    weights: Float[Tensor, " n"] | None = None,
) -> Float[Tensor, "k dim"]:
    """`k` initial centres drawn from `points`.

    Args:
        points: the data.
        k: the number of centres.
        generator: the random source (same generator state, same centres).
        weights: a weight per point (for example the count of a distinct patch); the first
            centre is then drawn with probability proportional to the weights and the
            distances are kept in float64. Without weights the first centre is uniform.

    Raises:
        ValueError: fewer than `k` distinct points.
    """
    n = points.shape[0]
    if weights is None:
        first = int(torch.randint(n, (1,), generator=generator))
    else:
        first = int(torch.multinomial(weights, 1, generator=generator))
    centres = [points[first]]
    closest = (points - points[first]).square().sum(dim=1)
    if weights is not None:
        closest = closest.double()
    for i in range(1, k):
        score = closest if weights is None else weights * closest
        total = float(score.sum())
        if total <= 0:
            raise ValueError(f"the data has only {i} distinct points, fewer than k={k}")
        probs = score / total if weights is None else score
        index = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(points[index])
        distance = (points - points[index]).square().sum(dim=1)
        closest = torch.minimum(closest, distance if weights is None else distance.double())
    return torch.stack(centres)
