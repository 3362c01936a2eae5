"""The ``spectravlm`` command.

* ``spectravlm data ...``: the data commands (demo store, ingest, statistics, info).
* ``spectravlm fit|validate|test|predict --config configs/....yaml``: LightningCLI over the tasks
  (:class:`~spectravlm.tasks.base.BaseTask` subclasses, ``model.class_path``) and
  :class:`~spectravlm.data.datamodule.CubeDataModule`. Values are given once: ``model.bands`` is computed
  from ``data.stores`` and ``data.groups`` (all bands of each group unless the groups name bands),
  ``model.window_size`` and ``model.seed`` come from ``data.window_size`` and ``data.seed``. Checkpoints
  are written atomically (:class:`~spectravlm.callbacks.checkpoint_io.AtomicCheckpointIO`) unless the
  config names another checkpoint IO plugin.
* ``spectravlm export CHECKPOINT DIR``: the encoder of a pretraining checkpoint, with ``save_pretrained``.
* ``spectravlm ask STORE QUESTION --model DIR``: a saved SpectraVLM answers about a window of a store.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from spectravlm.errors import SpectraVLMError

TRAINING_COMMANDS = ("fit", "validate", "test", "predict")
USAGE = """usage: spectravlm {fit,validate,test,predict} --config CONFIG.yaml [--key value ...]
       spectravlm export CHECKPOINT DIR
       spectravlm ask STORE QUESTION --model DIR [--bbox ...] [--dates START/END] [--json]
       spectravlm data {demo,info,verify,stats,ingest} ...

Run `spectravlm fit -h` or `spectravlm data -h` for details."""


def _library_error(err: BaseException) -> SpectraVLMError | None:
    """The first :class:`SpectraVLMError` in the cause/context chain of ``err``, if any."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, SpectraVLMError):
            return e
        todo += [e.__cause__, e.__context__]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spectravlm`` console script."""
    from_sys = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    try:
        if argv[0] == "data":
            from spectravlm.cli.data import data_main

            return data_main(argv[1:])
        if argv[0] in TRAINING_COMMANDS:
            from spectravlm.cli.train import lightning_cli

            try:
                lightning_cli(None if from_sys else argv)
            except Exception as err:  # jsonargparse wraps errors raised while instantiating classes
                cause = _library_error(err)
                if cause is None:
                    raise
                raise cause from None
            return 0
        if argv[0] == "export":
            from spectravlm.cli.train import export_main

            return export_main(argv[1:])
        if argv[0] == "ask":
            from spectravlm.cli.ask import ask_main

            return ask_main(argv[1:])
        print(
            f"spectravlm: unknown command {argv[0]!r}; "
            f"known: {', '.join(TRAINING_COMMANDS)}, export, data, ask",
            file=sys.stderr,
        )
        return 2
    except SpectraVLMError as err:
        print(f"spectravlm: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
