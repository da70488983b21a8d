"""``build_captioner(config, weights)``: the captioner a ``ModelConfig`` describes,
``fc`` (``train.model.captioner.Captioner``) or ``att``
(``train.model.attention.AttentionCaptioner``, its subclass). The one place that
knows both, so neither module imports the other's user."""
from train.model.attention import AttentionCaptioner
from train.model.captioner import Captioner


def build_captioner(config, weights="none"):
    """A new captioner for ``config`` (``weights``: "imagenet" or "none")."""
    cls = AttentionCaptioner if getattr(config, "decoder", "fc") == "att" else Captioner
    return cls(config, weights=weights)
