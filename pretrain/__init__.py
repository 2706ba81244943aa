"""SdAE / MAE pretraining on mmengine. Importing registers the model, dataset, hooks and optimizer constructor."""
from . import data, hooks, optim, probe_hook  # noqa: F401  (registration side effects)
from .masking import MaskPlan, fold_sizes, plan_masks
from .model import MaskedDecoder, MaskedPretrainer, cosine_loss, standardize, validate_model_cfg

__all__ = ['MaskPlan', 'MaskedDecoder', 'MaskedPretrainer', 'cosine_loss', 'fold_sizes', 'plan_masks', 'standardize',
           'validate_model_cfg']
