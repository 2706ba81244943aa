"""Pictures of what checkpoints learned and predict: last-block attention and patch-feature PCA maps
(:mod:`sdae_suite.visualize.features`), fine-tuned detector / segmentor predictions next to the ground truth
(:mod:`sdae_suite.visualize.predictions`). Each writes PNGs plus a ``visuals.json`` manifest that the benchmark report
embeds."""
