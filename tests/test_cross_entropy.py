"""The cross-entropy objective (``train.objectives.cross_entropy``): padding ignored, the
attention regulariser masked on the targets, and ``--att-reg`` reaching the loss."""
import argparse

import pytest

torch = pytest.importorskip("torch")

from edge.vocab import SPECIALS  # noqa: E402
from train import fit  # noqa: E402
from train.data.batches import pad_tokens  # noqa: E402
from train.model.attention import attention_penalty  # noqa: E402
from train.objectives.cross_entropy import TrainStep, batch_loss, caption_loss  # noqa: E402
from test_attention import _images, _model as _att_model  # noqa: E402

V = len(SPECIALS) + 8  # test_attention's model: 8 words, attention that tells regions apart


def _regions(model, n):
    with torch.no_grad():
        return model.encode(torch.from_numpy(_images(n, seed=2)))


def test_padding_is_ignored_by_the_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, V)
    targets = torch.tensor([[5, 6, 2, 0, 0], [7, 8, 9, 10, 2]])
    real = targets != 0
    by_hand = -torch.log_softmax(logits, -1).gather(2, targets.unsqueeze(2)).squeeze(2)[real].mean()
    assert float(caption_loss(logits, targets, 0.0)) == pytest.approx(float(by_hand), rel=1e-6)
    changed = logits.clone()
    changed[0, 3:] = torch.randn(2, V) * 10  # whatever the model says after <end>
    assert float(caption_loss(changed, targets, 0.0)) == pytest.approx(float(by_hand), rel=1e-6)


def _penalty(model, rows, regions):
    """Teacher-force the token rows (``<start> ... <end>``), padded together, and
    return the regulariser on their targets."""
    tokens = pad_tokens(rows)
    model.forward_features(regions, tokens[:, :-1])
    return attention_penalty(model.attention_weights, tokens[:, 1:])


def test_attention_penalty_counts_the_steps_with_a_target_only():
    """A caption's penalty does not depend on the captions beside it: padded steps,
    the one fed ``<end>`` included, are not counted."""
    model = _att_model()
    regions = _regions(model, 2)
    short, long = [1, 5, 6, 2], [1, 5, 6, 7, 8, 9, 2]
    with torch.no_grad():
        alone = [float(_penalty(model, [row], regions[i:i + 1]))
                 for i, row in enumerate((short, long))]
        together = float(_penalty(model, [short, long], regions))
        # by hand: the short caption's attention summed over its 3 steps (a, red, <end>)
        model.forward_features(regions[:1], torch.tensor([short[:-1]]))
        coverage = model.attention_weights[0].sum(0)
    assert together == pytest.approx((alone[0] + alone[1]) / 2, rel=1e-5)
    assert alone[0] == pytest.approx(float(((1 - coverage) ** 2).mean()), rel=1e-5)


def test_att_reg_flag_reaches_the_loss_and_its_gradient():
    model = _att_model()
    parser = argparse.ArgumentParser()
    fit.add_arguments(parser)
    args = parser.parse_args(["--data", "x", "--out", "y", "--decoder", "att", "--att-reg", "3"])
    plain = parser.parse_args(["--data", "x", "--out", "y", "--decoder", "att"])
    rows = [[1, 5, 6, 2], [1, 7, 8, 9, 2], [1, 5, 2]]
    batch = {"inputs": _regions(model, 2), "tokens": pad_tokens(rows),
             "owner": torch.tensor([0, 0, 1])}
    step = TrainStep(model, from_features=True)
    with_reg = batch_loss(step, batch, args, "cpu")
    with torch.no_grad():
        penalty = _penalty(model, rows, batch["inputs"][batch["owner"]])
    without = batch_loss(step, batch, plain, "cpu")
    assert float(penalty) > 1e-3
    assert float(with_reg.detach() - without.detach()) == pytest.approx(3 * float(penalty), rel=1e-4)
    grads = []
    for loss in (with_reg, without):
        model.zero_grad()
        loss.backward()
        grads.append(model.att_key.weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])  # the regulariser trains the attention
