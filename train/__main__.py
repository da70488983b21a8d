"""``python -m train COMMAND``: the workstation side (data, training, evaluation)."""
from edge.cli import dispatch

COMMANDS = [
    ("synth", "train.data.synth", "write a synthetic shapes dataset (Karpathy format)"),
    ("prepare", "train.data.prepared", "decode and resize a dataset's images once into one file"),
    ("fit", "train.fit", "train a captioner"),
    ("eval", "train.evaluation.evaluate", "decode a split and score it (checkpoint or bundle)"),
    ("score", "train.evaluation.score", "score a COCO-format results file"),
    ("caption", "train.evaluation.caption", "caption image files"),
    ("recipe", "train.recipe.run", "download a dataset and run the whole recipe to a verified bundle"),
]


def main(argv=None):
    return dispatch("python -m train", "nanocap training and evaluation", COMMANDS, argv)


def entry():
    raise SystemExit(main())


if __name__ == "__main__":
    entry()
