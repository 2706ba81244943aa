"""The suite's commands; each ``tools/<name>.py`` runs ``sdae_suite.commands.<name>.main``.

Every command is an entry point, so importing this package makes the suite's one global change: safe checkpoint
loading for mmengine (:func:`sdae_suite.engine.checkpoint_io.install_safe_checkpoint_io`, which says why it is global).
Here, once, rather than in each command, so that no command can leave it out.
"""
try:
    from sdae_suite.engine.checkpoint_io import install_safe_checkpoint_io
except ImportError:  # torch / mmengine missing or broken: no checkpoint can be loaded through them in this process
    pass  # (the commands that load one import them and fail on their own; `make doctor` names what is missing)
else:
    install_safe_checkpoint_io()
