"""Layer-wise learning-rate decay for a small Transformer encoder, with a named capture.

Fine-tuning recipes for BERT, BEiT and ViT (timm's `layer_decay`, fastai's discriminative
learning rates) give each encoder layer its own learning rate: in timm's convention the
head trains at the base rate, the top layer (with the final LayerNorm) at `decay` times
that, each layer below at `decay` times the rate of the layer above, and the embeddings
lower still. layer_decay.pspec writes that as one rule over `layer_<i>`, with
`let depth = count(i)` counting the layers in the tree, and keeps biases and LayerNorm
parameters (`where ndim <= 1`) out of weight decay.

The script measures the learning rate and weight decay of every label from the compiled
optimizer itself (one AdamW step on chosen inputs), checks them against the formula, and
trains a few steps on a toy sequence-classification task. CPU, a few seconds.

    python examples/layer_decay.py

`params()` builds the model's parameters without training, for `pspec tree`:

    pspec tree examples.layer_decay:params -o examples/layer_decay.tree.json
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

import partspec

VOCAB, SEQ, DIM, HEADS, LAYERS, CLASSES = 32, 8, 32, 4, 6, 2
LR, DECAY, WEIGHT_DECAY = 1e-3, 0.75, 0.05


class EncoderLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm(name="ln_1")(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=HEADS, name="attn")(h, h)
        h = nn.LayerNorm(name="ln_2")(x)
        h = nn.Dense(2 * DIM, name="mlp_in")(h)
        return x + nn.Dense(DIM, name="mlp_out")(nn.gelu(h))


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        for i in range(LAYERS):
            x = EncoderLayer(name=f"layer_{i}")(x)
        return nn.LayerNorm(name="ln_f")(x)


class Classifier(nn.Module):
    @nn.compact
    def __call__(self, tokens):
        x = nn.Embed(VOCAB, DIM, name="embed")(tokens)
        pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, SEQ, DIM))
        x = Encoder(name="encoder")(x + pos)
        return nn.Dense(CLASSES, name="head")(x.mean(axis=1))


def init_params(key):
    return Classifier().init(key, jnp.zeros((1, SEQ), jnp.int32))["params"]


def params():
    """The parameters `pspec tree examples.layer_decay:params` records (no training)."""
    return init_params(jax.random.PRNGKey(0))


def measure(plan, params):
    """path -> (learning rate, weight decay), read off one AdamW step of ``plan.tx``.

    On a fresh state, AdamW's first update of a parameter p with gradient g is
    -lr * (g / (|g| + eps) + wd * p): with p = 0 and g = 1 it is -lr (to 1e-8), and with
    p = 1 and g = 0 it is -lr * wd.
    """
    zeros = jax.tree.map(jnp.zeros_like, params)
    ones = jax.tree.map(jnp.ones_like, params)

    @jax.jit
    def first_update(grads, p):
        return plan.tx.update(grads, plan.tx.init(p), p)[0]

    lrs = traverse_util.flatten_dict(first_update(ones, zeros), sep="/")
    wds = traverse_util.flatten_dict(first_update(zeros, ones), sep="/")
    out = {}
    for path in lrs:
        lr = -float(lrs[path].ravel()[0])
        out[path] = (lr, -float(wds[path].ravel()[0]) / lr)
    return out


def main() -> None:
    model = Classifier()
    params = init_params(jax.random.PRNGKey(0))
    spec = partspec.load(Path(__file__).with_name("layer_decay.pspec"))
    plan = partspec.compile(spec, params, lr=LR, decay=DECAY, weight_decay=WEIGHT_DECAY)

    # The learning rate timm's layer decay gives each group: the head at LR, layer i at
    # LR * DECAY ** (LAYERS - i), the final LayerNorm with the last layer (LR * DECAY),
    # the embeddings at LR * DECAY ** (LAYERS + 1).
    def expected_lr(path: str) -> float:
        if path.startswith(("embed/", "pos_embedding")):
            return LR * DECAY ** (LAYERS + 1)
        if path.startswith("encoder/layer_"):
            i = int(path.split("/")[1].removeprefix("layer_"))
            return LR * DECAY ** (LAYERS - i)
        if path.startswith("encoder/ln_f/"):
            return LR * DECAY
        return LR

    measured = measure(plan, params)
    flat_params = traverse_util.flatten_dict(params, sep="/")
    by_label: dict[str, list[str]] = {}
    for path, label in traverse_util.flatten_dict(plan.labels, sep="/").items():
        by_label.setdefault(label, []).append(path)
        lr, wd = measured[path]
        np.testing.assert_allclose(lr, expected_lr(path), rtol=1e-5)
        no_wd = np.ndim(flat_params[path]) <= 1 or path.endswith("/bias")
        np.testing.assert_allclose(wd, 0.0 if no_wd else WEIGHT_DECAY, atol=1e-6)
    print(f"{'label':<16} {'lr':>9}  {'wd':>4}  leaves  e.g.")
    for label, paths in by_label.items():
        lr, wd = measured[paths[0]]
        print(f"{label:<16} {lr:9.3e}  {wd:4.2f}  {len(paths):6d}  {paths[0]}")
    print("every leaf's learning rate and weight decay match the layer-decay formula")

    # A toy task: is token 0 among the first four tokens?
    tokens = jax.random.randint(jax.random.PRNGKey(1), (256, SEQ), 0, VOCAB)
    y = jnp.any(tokens[:, :4] == 0, axis=1).astype(jnp.int32)

    @jax.jit
    def step(p, s):
        def loss_fn(p):
            logits = model.apply({"params": p}, tokens)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = plan.tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    p, s = params, plan.tx.init(params)
    losses = []
    for _ in range(30):
        p, s, loss = step(p, s)
        losses.append(float(loss))
    print(f"loss: start {losses[0]:.4f}, end {losses[-1]:.4f}")
    assert losses[-1] < losses[0], losses


if __name__ == "__main__":
    main()
