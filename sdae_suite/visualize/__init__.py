"""Pictures of what checkpoints learned and predict: last-block attention and patch-feature PCA maps
(:mod:`visualize.features`), fine-tuned detector / segmentor predictions next to the ground truth
(:mod:`visualize.predictions`). Each writes PNGs plus a ``visuals.json`` manifest that the benchmark report embeds."""
