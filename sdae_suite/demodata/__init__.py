"""The embedded synthetic data: one procedural scene generator for the pretraining pool, COCO and ADE-format sets."""
