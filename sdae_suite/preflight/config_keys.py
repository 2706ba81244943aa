"""--cfg-options keys whose top level names nothing: a typo (``train_dataloder.batch_size=2``) would otherwise add a
new key that no one reads, and the run would go on with the setting unchanged."""
from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from typing import Any

# Top-level keys mmengine's Runner reads besides its constructor arguments (Runner.from_cfg / self.cfg.get), and the
# few the suite's launchers read.
_RUNNER_EXTRA = {'runner_type', 'model_wrapper_cfg', 'compile', 'sync_bn', 'find_unused_parameters',
                 'activation_checkpointing', 'efficient_conv_bn_eval', 'gpu_ids', 'cfg'}


class UnknownConfigKeyError(ValueError):
    """A --cfg-options key that is neither in the config nor read by mmengine's Runner."""


def runner_keys() -> set[str]:
    from mmengine.runner import Runner

    return {k for k in inspect.signature(Runner.__init__).parameters if k != 'self'} | _RUNNER_EXTRA


def check_option_keys(options: Iterable[str], cfg: Any, config_name: str, extra: Iterable[str] = ()) -> None:
    """Raise UnknownConfigKeyError for the first option whose top-level key the config lacks and no Runner reads,
    suggesting the closest known key. ``cfg`` is the loaded config, before the options are merged."""
    known = set(cfg.keys()) | runner_keys() | set(extra)
    for option in options:
        top = option.split('.', 1)[0]
        if top not in known:
            close = difflib.get_close_matches(top, sorted(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else 'check the spelling against the config'
            raise UnknownConfigKeyError(f"--cfg-options {option}: '{top}' is not a key of {config_name} nor one that "
                                        f"mmengine's Runner reads (typo?); {hint}")
