"""Follows the Flax guide "Save and load checkpoints" (Orbax) with a partspec optimizer.

Shows: a linen classifier trains under checkpoint_resume.pspec; its `TrainState` is saved
with an Orbax `CheckpointManager` (`ocp.args.StandardSave`); the head's learning rate is
edited in the spec (0.01 -> 0.003); `partspec.tools.diff` says beforehand that the checkpoint
still restores (the head's rule is named `as head`); the state is restored into an
abstract target from `jax.eval_shape` (`ocp.args.StandardRestore`), bit for bit, and
training continues with the saved Adam moments at the new rate. Then the same edit
without `as head`: `partspec.tools.diff` predicts the failure and Orbax refuses the checkpoint.
Guide: docs/checkpoints.md. Synthetic data, CPU, a few seconds.

    python examples/checkpoint_resume.py

`params()` builds the classifier's parameters without training, for `pspec tree`:

    pspec tree examples.checkpoint_resume:params -o examples/checkpoint_resume.tree.json
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax.training import train_state

import partspec
from partspec.tools.diff import diff, render_diff

SPEC = Path(__file__).with_name("checkpoint_resume.pspec")


class Backbone(nn.Module):
    """Stands in for a pretrained feature extractor."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(32, name="Dense_0")(x))
        x = nn.relu(nn.Dense(32, name="Dense_1")(x))
        return x


class Classifier(nn.Module):
    def setup(self):
        self.backbone = Backbone()
        self.head = nn.Dense(4)

    def __call__(self, x):
        return self.head(self.backbone(x))


def params():
    """The parameters `pspec tree examples.checkpoint_resume:params` records (no training)."""
    return Classifier().init(jax.random.PRNGKey(0), jnp.zeros((1, 16)))["params"]


def create_state(params, tx):
    return train_state.TrainState.create(apply_fn=Classifier().apply, params=params, tx=tx)


@jax.jit
def train_step(state, x, y):
    def loss_fn(p):
        logits = state.apply_fn({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def train(state, x, y, steps):
    losses = []
    for _ in range(steps):
        state, loss = train_step(state, x, y)
        losses.append(float(loss))
    return state, losses


def bits(tree):
    """Every array leaf as raw bytes, to compare trees bit for bit."""
    return [np.asarray(leaf).tobytes() for leaf in jax.tree.leaves(tree)]


def main() -> None:
    kx, kw = jax.random.split(jax.random.PRNGKey(1))
    x = jax.random.normal(kx, (256, 16))
    y = jnp.argmax(x @ jax.random.normal(kw, (16, 4)), axis=-1)
    p0 = params()
    shapes = jax.eval_shape(lambda: p0)  # the structure alone, for diff and abstract targets

    text = SPEC.read_text(encoding="utf-8")
    old_spec = partspec.parse(text, filename=SPEC.name)
    state = create_state(p0, partspec.compile(old_spec, p0).tx)
    state, losses = train(state, x, y, 30)
    print(f"trained 30 steps under {SPEC.name}: loss {losses[0]:.4f} -> {losses[-1]:.4f}")
    print("optimizer-state groups:", sorted(state.opt_state.groups))

    with tempfile.TemporaryDirectory() as tmp:
        mngr = ocp.CheckpointManager(Path(tmp) / "ckpt")
        mngr.save(int(state.step), args=ocp.args.StandardSave(state))
        mngr.wait_until_finished()
        print(f"saved the TrainState at step {int(state.step)} with Orbax")

        # Edit the head's learning rate, as one would edit the file.
        edited = text.replace("adam(0.01) as head", "adam(0.003) as head")
        assert edited != text
        new_spec = partspec.parse(edited, filename="checkpoint_resume.pspec (edited)")
        report = diff(old_spec, new_spec, shapes)
        print("\npartspec.diff, head: adam(0.01) -> adam(0.003), named `as head`:")
        print(render_diff(report), end="")
        assert report.restorable and "head" in report.kept

        new_tx = partspec.compile(new_spec, p0).tx
        abstract = jax.eval_shape(lambda: create_state(p0, new_tx))
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(abstract))
        mngr.close()
    assert int(restored.step) == int(state.step)
    assert bits(restored.params) == bits(state.params)
    assert bits(restored.opt_state) == bits(state.opt_state)
    print("\nrestored under the edited spec: params and Adam moments bit-identical")

    # The restored moments are used: one step from them differs from a fresh Adam state.
    fresh = create_state(restored.params, new_tx).replace(step=restored.step)
    after, _ = train_step(restored, x, y)
    after_fresh, _ = train_step(fresh, x, y)
    assert bits(after.params["head"]) != bits(after_fresh.params["head"])
    restored, more = train(restored, x, y, 30)
    print(f"30 more steps at the new rate: loss {more[0]:.4f} -> {more[-1]:.4f}")
    assert more[-1] < losses[0]

    # The same edit without `as head`: the label is the action's text, so it changes.
    unnamed_old = partspec.parse(text.replace(" as head", ""), filename="unnamed.pspec")
    unnamed_new = partspec.parse(edited.replace(" as head", ""), filename="unnamed-edited.pspec")
    report = diff(unnamed_old, unnamed_new, shapes)
    print("\npartspec.diff, the same edit without `as head`:")
    print(render_diff(report).split("\n\n")[0])
    assert not report.restorable
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = ocp.StandardCheckpointer()
        ckpt.save(Path(tmp) / "unnamed", create_state(p0, partspec.compile(unnamed_old, p0).tx))
        ckpt.wait_until_finished()
        target = jax.eval_shape(lambda: create_state(p0, partspec.compile(unnamed_new, p0).tx))
        try:
            ckpt.restore(Path(tmp) / "unnamed", target)
        except ValueError as err:
            print(f"Orbax refuses it, as predicted: {str(err).splitlines()[0][:100]}...")
        else:  # pragma: no cover - would mean Orbax restored a renamed state
            raise AssertionError("Orbax restored a checkpoint whose labels changed")
        ckpt.close()


if __name__ == "__main__":
    main()
