"""ViT-B/16 in Flax linen, named as in google-research/vision_transformer (and big_vision).

The parameter structure that examples/vit_finetune.pspec is written against: a 16x16 patch
embedding (`embedding`), a class token (`cls`), a learned position embedding
(`Transformer/posembed_input/pos_embedding`), 12 encoder blocks
`Transformer/encoderblock_{0..11}` with `LayerNorm_0`, `MultiHeadDotProductAttention_1`
(`query`, `key`, `value`, `out`), `LayerNorm_2` and `MlpBlock_3` (`Dense_0`, `Dense_1`), a
final `Transformer/encoder_norm` and a 1000-way `head`: about 86M parameters.

`params()` builds the parameters; `pspec tree` calls it under `jax.eval_shape`, so no
weights are ever materialised:

    pspec tree examples.vit_b16:params -o examples/vit_b16.tree.json

Run as a script, it prints the parameter count (shapes only, also via `jax.eval_shape`):

    python examples/vit_b16.py
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

PATCH = 16
HIDDEN = 768
MLP_DIM = 3072
NUM_HEADS = 12
NUM_LAYERS = 12
NUM_CLASSES = 1000
IMAGE_SIZE = 224


class AddPositionEmbs(nn.Module):
    """Adds a learned position embedding to the token sequence."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        pos_embedding = self.param(
            "pos_embedding", nn.initializers.normal(stddev=0.02), (1, x.shape[1], x.shape[2])
        )
        return x + pos_embedding


class MlpBlock(nn.Module):
    """The transformer MLP: Dense -> GELU -> Dense."""

    mlp_dim: int
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
        out_dim = x.shape[-1]
        x = nn.Dense(
            self.mlp_dim,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )(x)
        x = nn.gelu(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        x = nn.Dense(
            out_dim,
            kernel_init=nn.initializers.xavier_uniform(),
            bias_init=nn.initializers.normal(stddev=1e-6),
        )(x)
        return nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)


class Encoder1DBlock(nn.Module):
    """Pre-LayerNorm transformer block: self-attention, then the MLP, both residual.

    The submodule names are spelled out because the original checkpoints were written by a
    Flax that numbered submodules across types (`LayerNorm_0`, `MultiHeadDotProductAttention_1`,
    `LayerNorm_2`, `MlpBlock_3`); current Flax numbers per type.
    """

    mlp_dim: int
    num_heads: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, inputs: jax.Array, *, deterministic: bool) -> jax.Array:
        x = nn.LayerNorm(name="LayerNorm_0")(inputs)
        x = nn.MultiHeadDotProductAttention(
            num_heads=self.num_heads,
            kernel_init=nn.initializers.xavier_uniform(),
            broadcast_dropout=False,
            dropout_rate=self.attention_dropout_rate,
            deterministic=deterministic,
            name="MultiHeadDotProductAttention_1",
        )(x, x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=deterministic)
        x = x + inputs
        y = nn.LayerNorm(name="LayerNorm_2")(x)
        y = MlpBlock(mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, name="MlpBlock_3")(
            y, deterministic=deterministic
        )
        return x + y


class Encoder(nn.Module):
    """Position embedding, `num_layers` encoder blocks and a final LayerNorm."""

    num_layers: int
    mlp_dim: int
    num_heads: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        x = AddPositionEmbs(name="posembed_input")(x)
        x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
        for i in range(self.num_layers):
            x = Encoder1DBlock(
                mlp_dim=self.mlp_dim,
                num_heads=self.num_heads,
                dropout_rate=self.dropout_rate,
                attention_dropout_rate=self.attention_dropout_rate,
                name=f"encoderblock_{i}",
            )(x, deterministic=not train)
        return nn.LayerNorm(name="encoder_norm")(x)


class VisionTransformer(nn.Module):
    """ViT with a class token and a linear classification head."""

    num_classes: int = NUM_CLASSES
    patch_size: int = PATCH
    hidden_size: int = HIDDEN
    mlp_dim: int = MLP_DIM
    num_heads: int = NUM_HEADS
    num_layers: int = NUM_LAYERS

    @nn.compact
    def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
        p = self.patch_size
        x = nn.Conv(
            self.hidden_size, kernel_size=(p, p), strides=(p, p), padding="VALID", name="embedding"
        )(images)
        n, h, w, c = x.shape
        x = jnp.reshape(x, (n, h * w, c))
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
        x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
        x = Encoder(
            num_layers=self.num_layers,
            mlp_dim=self.mlp_dim,
            num_heads=self.num_heads,
            name="Transformer",
        )(x, train=train)
        x = x[:, 0]  # the class token
        return nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)


def params() -> Any:
    """ViT-B/16's parameters (`variables["params"]`): call it under `jax.eval_shape`."""
    model = VisionTransformer()
    images = jnp.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
    return model.init(jax.random.PRNGKey(0), images)["params"]


def main() -> None:
    shapes = jax.eval_shape(params)  # shapes and dtypes only: nothing is allocated
    leaves = jax.tree_util.tree_leaves_with_path(shapes)
    total = sum(math.prod(leaf.shape) for _, leaf in leaves)
    blocks = [k for k in shapes["Transformer"] if k.startswith("encoderblock_")]
    print(f"ViT-B/16: {len(leaves)} parameter arrays, {len(blocks)} encoder blocks")
    print(f"parameters: {total:,} ({total / 1e6:.1f}M)")
    assert 86_000_000 < total < 87_000_000, total


if __name__ == "__main__":
    main()
