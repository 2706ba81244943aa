"""Frozen-feature probes of a ViT checkpoint: k-NN and linear classification on pooled features of an image-labelled
split, and a linear semantic-segmentation probe on patch features. Features are computed once per checkpoint and
cached (:mod:`sdae_suite.probes.features`); results are JSON files that the benchmark report reads
(:mod:`sdae_suite.probes.suite`)."""
from .knn import knn_predict, knn_top1
from .linear import linear_probe
from .seg import linear_seg_probe, seg_metrics

__all__ = ['knn_predict', 'knn_top1', 'linear_probe', 'linear_seg_probe', 'seg_metrics']
