"""Small models shared by the tests: the Flax transfer-learning guide's classifier."""

from __future__ import annotations

import flax.linen as nn
import jax


class Backbone(nn.Module):
    """Stands in for a pretrained feature extractor."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(16)(x))
        return nn.relu(nn.Dense(16)(x))


class Classifier(nn.Module):
    """A backbone with a new classifier head, as in the Flax transfer-learning guide."""

    num_classes: int = 3

    def setup(self) -> None:
        self.backbone = Backbone()
        self.head = nn.Dense(self.num_classes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.backbone(x))
